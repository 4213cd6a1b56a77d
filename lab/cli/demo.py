"""`lab demo`: the embedded default, end to end, from nothing."""

from __future__ import annotations

from datetime import timezone, datetime
from pathlib import Path

import typer

from . import app
from .hydra_apps import CONFIG_DIR, print_clear_summary
from .output import emit_json


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hcompose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hcompose(config_name=config_name, overrides=overrides)


def build_demo(home: Path, ledger_url: str, *, fresh: bool = False) -> dict:
    """Render the demo catalogue, ingest it, and put its consent records in the ledger (once)."""
    from ..catalog.demo import CATALOG, write_demo_source
    from ..catalog.card import write_dataset_card
    from ..catalog.ingest import ingest
    from ..catalog.store import save_catalog
    from ..rights.ledger import Ledger

    source = home / "demo-source"
    ledger = Ledger(ledger_url)
    already = ledger.grant_history("G-0000")
    if already and not fresh and (source / "metadata.jsonl").is_file():
        src_meta, imported = source / "metadata.jsonl", 0
    else:
        src = write_demo_source(source, datetime.now(timezone.utc))
        src_meta = src.metadata
        imported = 0 if already else len(ledger.import_jsonl(src.ledger))
    cat = ingest(source, CATALOG, metadata=src_meta)
    save_catalog(cat, home)
    card = write_dataset_card(cat, CONFIG_DIR.parent / "data_cards" / "datasets" / f"{CATALOG}.md")
    return {"catalog": CATALOG, "source": str(source), "items": len(cat.items),
            "ledger_events_imported": imported, "dataset_card": str(card)}


@app.command("demo")
def demo_cmd(
    policy: str = typer.Option("commercial", help="policy config to clear under"),
    train: bool = typer.Option(True, help="fine-tune the tiny model after clearance"),
    fresh: bool = typer.Option(False, help="re-render the demo audio"),
    as_json: bool = typer.Option(False, "--json"),
    overrides: list[str] = typer.Argument(None, help="extra Hydra overrides for the train step"),
) -> None:
    """Build the demo catalogue and ledger, clear it, and (next) fine-tune on the snapshot."""
    from ..jobs.clear import main as clear_main

    cfg = compose("clear", [f"policy={policy}"])
    built = build_demo(Path(cfg.paths.home), cfg.ledger_url, fresh=fresh)
    result = clear_main(cfg)
    summary = result.summary()
    out = {"demo": built, "clearance": summary}
    if not as_json:
        typer.echo(f"demo catalogue: {built['items']} recordings in {built['source']}; "
                   f"dataset card: {built['dataset_card']}")
        print_clear_summary(summary)
    if train and (CONFIG_DIR / "train.yaml").is_file():
        from ..jobs.train import main as train_main

        tcfg = compose("train", ["experiment=demo", f"policy={policy}",
                                 f"data.snapshot={summary['path']}", *(overrides or [])])
        out["training"] = train_main(tcfg)
    if as_json:
        emit_json(out)
        return
    if "training" in out:
        t = out["training"]
        ckpt = t["last_checkpoint"]
        typer.echo(f"trained {t['steps']} steps (final loss {t['final_loss']:.3f}) in {t['run_dir']}")
        typer.echo(f"checkpoints: {t['run_dir']}/checkpoints   data card: {ckpt}/data_card.json")
        typer.echo(f"audit it:    lab audit {ckpt}")
