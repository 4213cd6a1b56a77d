"""`lab demo`: the embedded default, end to end, from nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from ..resources import CONFIG_PACKAGE
from . import app
from .hydra_apps import print_clear_summary, print_sample_summary, print_train_summary
from .output import emit_json

DEMO_CONSENT = (
    "Every recording was made for this demo and carries a consent record in the ledger built "
    "alongside it; some records are deliberately opted out, revoked, expired, regional, "
    "non-commercial or missing, so that clearance has something to refuse."
)


def compose(config_name: str, overrides: list[str], config_dirs: Sequence[str | Path] = ()):
    """The config `lab clear` / `lab train` would run with (same search path: user folders first)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_module

    from ..resources.searchpath import user_config_dirs

    with user_config_dirs(config_dirs), initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        return hcompose(config_name=config_name, overrides=list(overrides))


def build_demo(home: Path, ledger_url: str, *, fresh: bool = False) -> dict:
    """Render the demo catalogue, ingest it, and put its consent records in the ledger (once)."""
    from ..catalog.card import write_dataset_card
    from ..catalog.demo import CATALOG, write_demo_source
    from ..catalog.ingest import ingest
    from ..catalog.store import save_catalog
    from ..rights.heads import open_ledger

    source = home / "demo-source"
    ledger = open_ledger(ledger_url, home=home)  # the import's head is signed by <home>/keys
    already = ledger.grant_history("G-0000")
    if already and not fresh and (source / "metadata.jsonl").is_file():
        src_meta, imported = source / "metadata.jsonl", 0
    else:
        src = write_demo_source(source, datetime.now(timezone.utc))
        src_meta = src.metadata
        imported = 0 if already else len(ledger.import_jsonl(src.ledger))
    cat = ingest(source, CATALOG, metadata=src_meta)
    save_catalog(cat, home)
    card = write_dataset_card(cat, home, consent=DEMO_CONSENT)
    return {
        "catalog": CATALOG,
        "source": str(source),
        "items": len(cat.items),
        "ledger_events_imported": imported,
        "dataset_card": str(card),
    }


@app.command("demo")
def demo_cmd(
    policy: str = typer.Option("commercial", help="policy config to clear under"),
    train: bool = typer.Option(True, help="fine-tune the tiny model after clearance"),
    sample: bool = typer.Option(True, help="sample the last checkpoint through the gate (needs --train)"),
    royalties: bool = typer.Option(True, help="issue this month's royalty statement (needs --train)"),
    fresh: bool = typer.Option(False, help="re-render the demo audio"),
    as_json: bool = typer.Option(False, "--json"),
    config_dir: Optional[list[Path]] = typer.Option(
        None, "--config-dir", "-cd", help="your config folder, searched before the shipped one"
    ),
    overrides: list[str] = typer.Argument(None, help="extra Hydra overrides for the train step"),
) -> None:
    """Build the demo catalogue and ledger, clear it, fine-tune on the snapshot, then sample the last
    checkpoint through the consent gate and issue this month's royalty statement: every user's first step."""
    from ..recipes.clear import main as clear_main

    dirs = config_dir or []
    cfg = compose("clear", [f"policy={policy}"], dirs)
    built = build_demo(Path(cfg.paths.home), cfg.ledger_url, fresh=fresh)
    result = clear_main(cfg)
    summary = result.summary()
    out = {"demo": built, "clearance": summary}
    if not as_json:
        typer.echo(
            f"demo catalogue: {built['items']} recordings in {built['source']}; dataset card: {built['dataset_card']}"
        )
        print_clear_summary(summary)
    if train:
        from ..recipes.train import main as train_main

        tcfg = compose(
            "train",
            ["experiment=demo", f"policy={policy}", f"data.snapshot={summary['path']}", *(overrides or [])],
            dirs,
        )
        out["training"] = train_main(tcfg).to_dict()
        last = out["training"].get("last_checkpoint")
        if sample and last:
            out["sampling"] = _demo_sample(last, dirs)
        if royalties and last:
            out["royalties"] = _demo_statement(tcfg)
    if as_json:
        emit_json(out)
        return
    if "training" in out:
        print_train_summary(out["training"])
    if "sampling" in out:
        typer.echo("")
        print_sample_summary(out["sampling"])
    if "royalties" in out:
        r = out["royalties"]
        typer.echo("")
        if r.get("refused"):
            typer.echo(f"royalties: {r['refused']}")
        else:
            totals = ", ".join(f"{a} {c}" for c, a in r["totals"].items()) or "nothing payable"
            when = "" if r["issued_now"] else " (issued earlier this month, unchanged)"
            typer.echo(f"royalty statement {r['period']}{when}: {r['lines']} lines, {totals}; {r['folder']}")
            if r["waiting"]:
                typer.echo(f"{r['waiting']} checkpoint(s) trained since are paid in next month's statement")
            typer.echo(f"prove it: lab royalties reconcile --period {r['period']}")


DEMO_PROMPT = "warm piano over soft strings"


def _demo_sample(checkpoint: str, dirs) -> dict:
    """One short output from `checkpoint` for a commercial use in GB, the way `lab sample` makes it."""
    from ..recipes.sample import main as sample_main

    cfg = compose(
        "sample",
        [f"checkpoint={checkpoint}", f"prompt={DEMO_PROMPT}", "duration=2.0", "use=[ai_inference,commercial_output]"],
        dirs,
    )
    return sample_main(cfg).to_dict()


def _demo_statement(cfg) -> dict:
    """This month's royalty statement over what the demo trained (a re-run that would change an issued
    statement is refused by the royalties module and reported here, not raised)."""
    from ..registry import Registry
    from ..rights.heads import open_ledger
    from ..royalties.statements import RoyaltyRefused, issue

    home = Path(cfg.paths.home)
    period = datetime.now(timezone.utc).strftime("%Y-%m")
    with Registry(cfg.registry_url) as reg:
        ledger = open_ledger(cfg.ledger_url, home=home)
        try:
            done = issue(reg, ledger, period, out=home / "royalties", key_dir=home / "keys", licensee="lab demo")
        except RoyaltyRefused as exc:
            return {"period": period, "refused": str(exc)}
        finally:
            ledger.close()
    return {
        "period": done.period,
        "statement_id": done.statement_id,
        "folder": str(done.folder),
        "lines": done.lines,
        "totals": done.totals_by_currency,
        "issued_now": done.reissued,
        "waiting": done.waiting,
    }
