"""A small lab world for the `lab serve` tests, built without training: the demo catalogue, ledger and
snapshot (tests/audit's builder), one untrained tiny MusicGen saved through the checkpoint contract
(weights + card + COMPLETE + signature) twice — a pretrain and a fine-tune of it — and a registry
holding both. Seconds, not minutes."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "audit"))

from audit_helpers import AuditDemo, build_audit_demo  # noqa: E402

SECRET = "s3cr3t-pa55word"
SECONDS = {"demo-0001": 4.0, "demo-0002": 3.0, "demo-0006": 2.0}  # G-0006: on_termination retrain
CHILD_SECONDS = {"demo-0005": 1.5}


@dataclass
class ServeWorld:
    demo: AuditDemo
    root: Path
    registry_url: str
    parent: Path
    child: Path
    parent_id: str = "serve-run-step-000010"
    child_id: str = "serve-ft-step-000010"

    def settings(self, **changes):
        from lab.serve import ServeSettings

        env = self.demo.env
        base = dict(
            home=env.home,
            experiments=env.experiments,
            ledger_url=env.ledger_url,
            registry_url=self.registry_url,
            public_key=env.public_key,
            sample_out=self.root / "outputs",
        )
        return ServeSettings(**(base | changes))


def _tiny_model():
    import numpy as np
    import torch

    from lab.models.musicgen import TinySpec, build_tiny

    torch.set_num_threads(1)
    t = np.arange(32_000, dtype=np.float32) / 32_000
    clips = [0.3 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (110.0, 220.0, 440.0)]
    return build_tiny(TinySpec(), ["warm piano", "slow strings", "bright synth"], clips, seed=0)


def write_checkpoint_folder(demo: AuditDemo, run_dir: Path, model, tok, seconds, cid, parent=None) -> Path:
    """A published, signed checkpoint (step 10) of an untrained model with a card from the demo snapshot."""
    from lab.cards import load_card
    from lab.cards.signing import ensure_keypair, sign_folder
    from lab.checkpoint.folder import write_checkpoint
    from lab.checkpoint.state import TrainingState
    from lab.models.musicgen import save_model

    key = ensure_keypair(demo.env.home / "keys")
    inherited = load_card(parent).sources if parent is not None else None

    def extras(staging: Path) -> None:
        save_model(model, tok, staging)
        demo.checkpoint(staging, seconds, checkpoint_id=cid, parent=parent, inherited=inherited)

    state = TrainingState(optimizer={}, scheduler={}, rng={}, extras={}, trainer={"step": 10})
    return write_checkpoint(run_dir, 10, state, extras, seal=lambda d: sign_folder(d, key.private_path))


def build_world(root: Path) -> ServeWorld:
    from lab.registry import Registry

    demo = build_audit_demo(root / "demo")
    model, tok = _tiny_model()
    parent = write_checkpoint_folder(demo, root / "run", model, tok, SECONDS, "serve-run-step-000010")
    child = write_checkpoint_folder(demo, root / "ft", model, tok, CHILD_SECONDS, "serve-ft-step-000010", parent=parent)
    url = f"sqlite:///{root / 'registry.sqlite'}"
    with Registry(url) as registry:
        registry.register(parent)
        registry.register(child)
    return ServeWorld(demo, root, url, parent, child)
