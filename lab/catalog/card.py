"""Dataset card (Hugging Face style: YAML metadata + prose) for an ingested catalogue."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from ..util.atomic import write_text


def render_dataset_card(cat) -> str:
    ok = [i for i in cat.items if i.status == "ok"]
    rejected = Counter(i.reject_reason for i in cat.items if i.status != "ok")
    licences = sorted({i.licence for i in cat.items if i.licence})
    meta = {
        "pretty_name": f"lab catalogue: {cat.name}",
        "license": "other",
        "license_name": "per-recording consent grants (see the lab rights ledger)",
        "task_categories": ["text-to-audio"],
        "tags": ["music", "consent-cleared", "lab"],
        "size_categories": ["n<1K"] if len(cat.items) < 1000 else ["1K<n<10K"],
        "lab": {"catalog": cat.name, "recordings": len(cat.items), "decoded": len(ok),
                "rejected": dict(sorted(rejected.items())), "declared_licences": licences},
    }
    hours = sum(i.duration_s or 0 for i in ok) / 3600
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# lab catalogue `{cat.name}`", "",
        "A catalogue ingested by `lab catalog ingest`. Declared licences here are informational: "
        "only the rights ledger's grants decide what a model may be trained on (`lab clear`).", "",
        f"- recordings: {len(cat.items)} ({len(ok)} decoded, {sum(rejected.values())} rejected at ingest)",
        f"- audio: {hours * 60:.1f} minutes",
        "", "## Recordings", "",
        "| recording | ISRC | title | artists | rights holders | status | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in cat.items:
        status = "ok" if i.status == "ok" else f"rejected: {i.reject_reason}"
        lines.append(f"| {i.recording_id} | {i.isrc or ''} | {i.title} | {', '.join(i.artists)} | "
                     f"{', '.join(i.rights_holders)} | {status} | {i.description} |")
    lines += ["", "## Consent", "",
              "Every recording was made for this demo and carries a consent record in the ledger built "
              "alongside it; some records are deliberately opted out, revoked, expired, regional, "
              "non-commercial or missing, so that clearance has something to refuse.", ""]
    return "\n".join(lines)


def write_dataset_card(cat, path: Path) -> Path:
    return write_text(path, render_dataset_card(cat))
