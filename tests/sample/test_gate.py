"""The sampling gate's allow/refuse matrix, on checkpoint folders built without training: the demo
catalogue, ledger and snapshots (tests/audit's builder), card files + COMPLETE + signature, no weights
(the gate never loads them). Each ledger change happens on a private copy of the demo ledger."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audit"))

from audit_helpers import AuditDemo, build_audit_demo  # noqa: E402

from lab.rights.records import RevokeEvent  # noqa: E402
from lab.sample.gate import GateInputError, check_gate, refusal_lines  # noqa: E402
from lab.util.timestamps import utcnow  # noqa: E402

USES = ["ai_inference", "commercial_output"]
SECONDS = {"demo-0001": 4.0, "demo-0002": 3.0, "demo-0006": 2.0}  # G-0001, G-0002 retain; G-0006 retrain
CHILD_SECONDS = {"demo-0005": 1.5}


def card_checkpoint(demo: AuditDemo, run_dir: Path, seconds, cid, *, parent=None, rules=None) -> Path:
    """A published, signed checkpoint folder (step 10) holding the card files only."""
    from lab.cards import load_card
    from lab.cards.signing import ensure_keypair, sign_folder
    from lab.checkpoint.folder import write_checkpoint
    from lab.checkpoint.state import TrainingState

    key = ensure_keypair(demo.env.home / "keys")
    inherited = load_card(parent).sources if parent is not None else None

    def extras(staging: Path) -> None:
        demo.checkpoint(staging, seconds, checkpoint_id=cid, parent=parent, inherited=inherited, rules=rules)

    state = TrainingState(optimizer={}, scheduler={}, rng={}, extras={}, trainer={"step": 10})
    return write_checkpoint(run_dir, 10, state, extras, seal=lambda d: sign_folder(d, key.private_path))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo (commercial snapshot) with a parent checkpoint (G-0001 under retire) and its fine-tune."""
    root = tmp_path_factory.mktemp("gate")
    demo = build_audit_demo(root / "demo")
    parent = card_checkpoint(demo, root / "run", SECONDS, "gate-run-step-000010", rules={"G-0001": "retire"})
    child = card_checkpoint(demo, root / "ft", CHILD_SECONDS, "gate-ft-step-000010", parent=parent)
    return demo, parent, child


def gate(world, folder, *, ledger=None, uses=USES, territory="GB", **kw):
    from lab.rights.heads import open_ledger

    demo = world[0]
    ledger = ledger or open_ledger(demo.env.ledger_url, home=demo.env.home)
    return check_gate(folder, uses=uses, territory=territory, ledger=ledger, public_key=demo.env.public_key, **kw)


def revoked(demo: AuditDemo, where: Path, gid: str):
    ledger = demo.ledger_copy(where)
    ledger.append(RevokeEvent(grant_id=gid, reason="artist withdrew", effective_at=utcnow(), issuer="test"))
    return ledger


def failed(decision) -> dict[str, set[str]]:
    """check → reasons of its refusals."""
    out: dict[str, set[str]] = {}
    for r in decision.refusals:
        out.setdefault(r.check, set()).add(r.reason)
    return out


def test_a_fresh_checkpoint_is_allowed_with_every_check_ok(world):
    d = gate(world, world[1])
    assert d.allowed and d.refusals == [] and set(d.checks.values()) == {"ok"}
    assert d.checkpoint_id == "gate-run-step-000010" and d.uses == sorted(USES)
    assert d.ledger_head_seq and len(d.ledger_head_hash) == 64 and len(d.data_card_sha256) == 64


def test_a_fine_tune_is_allowed_too(world):
    assert gate(world, world[2]).allowed


def test_revoked_after_training_names_recording_grant_and_reason(world, tmp_path):
    d = gate(world, world[1], ledger=revoked(world[0], tmp_path, "G-0002"))
    assert not d.allowed and failed(d) == {"consent": {"revoked"}}
    (r,) = d.refusals
    assert (r.recording_id, r.grant_id) == ("demo-0002", "G-0002") and "revoked by ledger seq" in r.detail
    (line,) = refusal_lines(d)
    assert "demo-0002" in line and "G-0002" in line and "revoked" in line


def test_a_revoked_inherited_source_refuses_the_fine_tune(world, tmp_path):
    d = gate(world, world[2], ledger=revoked(world[0], tmp_path, "G-0006"))
    assert not d.allowed and [(r.recording_id, r.reason) for r in d.refusals] == [("demo-0006", "revoked")]


def test_expired_at_the_moment_of_sampling(world):
    d = gate(world, world[1], at=utcnow() + timedelta(days=600))  # the demo grants end after 540 days
    assert not d.allowed and failed(d) == {"consent": {"expired"}}
    assert {r.recording_id for r in d.refusals} == set(SECONDS)


def test_a_purpose_no_grant_gives_is_refused(world):
    d = gate(world, world[1], uses=["ai_inference", "eval_only"])  # the demo grants never give eval_only
    assert not d.allowed and failed(d) == {"consent": {"purpose_not_granted"}}
    assert all("purposes missing: eval_only" in r.detail for r in d.refusals)


def test_territory_from_a_jp_snapshot(world, tmp_path):
    """demo-0015's grant covers JP and KR only: cleared under a JP policy, sampled in GB it is refused."""
    from lab.cli.demo import compose
    from lab.recipes.clear import main as clear_main
    from lab.snapshot import load_snapshot

    demo = world[0]
    env = demo.env
    snap = clear_main(compose("clear", [*env.overrides(), "policy=commercial", "policy.territory=JP"])).snapshot_path
    jp = AuditDemo(env, load_snapshot(snap))
    folder = card_checkpoint(jp, tmp_path / "jp", {"demo-0015": 2.0, "demo-0001": 1.0}, "gate-jp-step-000010")
    d = gate(world, folder)
    assert not d.allowed and [(r.recording_id, r.reason) for r in d.refusals] == [
        ("demo-0015", "territory_not_granted")
    ]
    assert "territory GB asked" in d.refusals[0].detail
    assert gate(world, folder, territory="JP").allowed


def test_a_non_commercial_source_refuses_commercial_output_only(world, tmp_path):
    from lab.snapshot import load_snapshot

    research = AuditDemo(world[0].env, load_snapshot(world[0].env.clear("research")))
    folder = card_checkpoint(research, tmp_path / "nc", {"demo-0019": 2.0, "demo-0001": 1.0}, "gate-nc-step-000010")
    d = gate(world, folder)
    assert not d.allowed
    lic = [r for r in d.refusals if r.check == "licence"]
    assert len(lic) == 1 and lic[0].reason == "licence_not_accepted" and "commercial_output" in lic[0].detail
    assert "non_commercial" in lic[0].detail
    consent = {(r.recording_id, r.reason) for r in d.refusals if r.check == "consent"}
    assert ("demo-0019", "licence_not_accepted") in consent or ("demo-0019", "purpose_not_granted") in consent
    # the same weights for training-only research use: the licence allows it
    d2 = gate(world, folder, uses=["ai_generative_training"])
    assert d2.allowed, refusal_lines(d2)


def test_a_tampered_file_is_refused_even_after_a_receipt(world, tmp_path):
    import shutil

    folder = tmp_path / "copy" / "step-000010"
    shutil.copytree(world[1], folder)
    home = tmp_path / "home"
    assert gate(world, folder, home=home).allowed  # verified in full, receipt written
    assert list((home / "cache" / "signatures").glob("*.json"))
    assert gate(world, folder, home=home).allowed  # from the receipt
    target = folder / "croissant.json"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01  # one changed byte, same size, mtime put back
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    d = gate(world, folder, home=home)
    assert not d.allowed and failed(d) == {"signature": {"signature"}}
    assert "croissant.json" in d.checks["signature"]


def test_a_missing_complete_marker_and_a_broken_card_are_both_reported(world, tmp_path):
    import shutil

    folder = tmp_path / "copy" / "step-000010"
    shutil.copytree(world[1], folder)
    (folder / "COMPLETE").unlink()
    d = gate(world, folder)
    assert failed(d) == {"signature": {"signature"}, "card": {"incomplete"}}
    (folder / "data_card.json").write_text("{}")
    d = gate(world, folder)
    assert {"signature", "card", "consent", "licence"} <= set(failed(d)) and not d.allowed


def test_a_retired_checkpoint_and_its_fine_tune_are_refused_by_the_registry(world, tmp_path):
    from lab.audit.verify import audit_checkpoint
    from lab.registry import Registry

    demo, parent, child = world
    ledger = revoked(demo, tmp_path, "G-0001")  # G-0001 ends under on_termination retire in the parent's card
    report = audit_checkpoint(parent, public_key=demo.env.public_key, ledger=ledger)
    assert report.status == "retired"
    with Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}") as registry:
        registry.register(parent)
        registry.register(child)
        assert gate(world, parent, registry=registry).allowed  # registered, not audited: fine
        registry.record_audit("gate-run-step-000010", report.to_dict())
        for folder in (parent, child):
            d = gate(world, folder, registry=registry)  # the demo ledger: consent alone would allow it
            assert failed(d) == {"registry": {"retired"}}, refusal_lines(d)
        assert "ancestor gate-run-step-000010" in gate(world, child, registry=registry).checks["registry"]
        d = gate(world, parent, ledger=ledger, registry=registry)
        assert failed(d) == {"registry": {"retired"}, "consent": {"revoked"}}


def test_absent_from_the_registry_is_fine_and_said(world, tmp_path):
    from lab.registry import Registry

    with Registry(f"sqlite:///{tmp_path / 'empty.sqlite'}") as registry:
        d = gate(world, world[1], registry=registry)
    assert d.allowed and d.checks["registry"] == "ok"


@pytest.mark.parametrize(("uses", "territory"), [(["selling"], "GB"), (USES, "Narnia"), (USES, "WW")])
def test_a_malformed_request_is_bad_input(world, uses, territory):
    with pytest.raises(GateInputError, match="sampling request"):
        gate(world, world[1], uses=uses, territory=territory)


def test_there_is_no_override():
    import inspect

    params = set(inspect.signature(check_gate).parameters)
    assert not {p for p in params if any(w in p for w in ("force", "override", "skip", "allow"))}


def test_the_recipe_refuses_before_loading_anything_and_writes_only_refusal_records(world, tmp_path):
    """`SampleRecipe.run` on a refused request: one refusal record per prompt, a registry row each, no audio."""
    from lab.cli.demo import compose
    from lab.recipes.sample import SampleRecipe
    from lab.registry import Registry

    env = world[0].env
    out, url = tmp_path / "out", f"sqlite:///{tmp_path / 'registry.sqlite'}"
    cfg = compose(
        "sample",
        [
            *env.overrides(),
            f"checkpoint={world[1]}",
            "prompts=[a,b]",
            "use=[eval_only]",
            f"out={out}",
            f"registry_url={url}",
        ],
    )
    recipe = SampleRecipe(cfg)
    summary = recipe.run()
    assert not summary.allowed and recipe.generator is None  # nothing loaded
    assert len(summary.refusals) == len(SECONDS) and all("purpose_not_granted" in x for x in summary.refusals)
    assert sorted(p.parent.name for p in out.rglob("*") if p.is_file()) == ["refusals", "refusals"]
    with Registry(url) as registry:
        rows = registry.outputs()
    assert sorted(r["prompt"] for r in rows) == ["a", "b"] and {r["kind"] for r in rows} == {"refused"}
    assert {Path(p).stem for p in summary.refusal_records} == {r["record_id"] for r in rows}
