"""Human- and hub-facing views of a data card: the Hugging Face model card and a Croissant description.

Both are pure functions of a `DataCard`; nothing here touches the network (`ModelCard.validate()`
would call the Hub, so it is never called).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .schema import DataCard, SourceRow, bytes_sha256

DEFAULT_TAGS = ("music", "musicgen", "text-to-audio", "lab")

# Licence ids the Hub accepts in `license:` (the subset an SPDX id can map to).
_HF_LICENSES = {
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0",
    "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1",
    "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "odc-by", "odbl",
}
_SPDX_ALIASES = {
    "ODC-By-1.0": "odc-by", "ODbL-1.0": "odbl", "PDDL-1.0": "pddl", "OFL-1.1": "ofl-1.1",
    "LPPL-1.3c": "lppl-1.3c", "MS-PL": "ms-pl",
}


def hf_license(spdx: str, license_link: str | None = None) -> dict[str, str]:
    """Hub licence metadata for an SPDX expression.

    A single SPDX id the Hub knows maps to its id (CC-BY-4.0 → cc-by-4.0, GPL-3.0-only → gpl-3.0).
    Anything else (a LicenseRef contract, AND/OR, an id the Hub lacks) becomes `other` with
    `license_name` (a slug of the expression) and `license_link` (default: this card's licence section).
    """
    expr = spdx.strip()
    if expr in _SPDX_ALIASES:
        return {"license": _SPDX_ALIASES[expr]}
    key = re.sub(r"-(only|or-later)$", "", expr).lower()
    if " " not in expr and key in _HF_LICENSES:
        return {"license": key}
    name = re.sub(r"^licenseref-", "", expr.lower())
    name = re.sub(r"[^a-z0-9.]+", "-", name).strip("-") or "other"
    return {"license": "other", "license_name": name, "license_link": license_link or "README.md#licence"}


def _cell(value: Any) -> str:
    """A value safe inside a markdown table cell."""
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else ("" if value is None else str(value))
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _holders(row: SourceRow) -> str:
    return "; ".join(f"{h.name} ({h.role}, {h.right} {h.share:g}%)" for h in row.rights_holders)


def _fmt_seconds(s: float) -> str:
    return f"{s:,.1f}"


_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

| | |
|---|---|
| Checkpoint | `{{ c.identity.checkpoint_id }}` (step {{ c.identity.step }}) |
| Created | {{ created }} |
| Relation | {{ c.lineage.relation }} from `{{ c.lineage.base_model.id }}` ({{ c.lineage.base_model.kind }}) |
| Snapshot | `{{ c.snapshot.snapshot_id }}` (Merkle root `{{ c.snapshot.merkle_root[:16] }}…`) |
| Consent ledger | head #{{ c.snapshot.ledger_head_seq }} `{{ c.snapshot.ledger_head_hash[:16] }}…`, cleared {{ cleared }} |
| Policy | {{ c.snapshot.policy.name }}: {{ c.snapshot.policy.purposes | join(", ") }} in {{ c.snapshot.policy.territory }} |
| Code | `{{ c.identity.code_commit }}`{% if c.identity.code_dirty %} (uncommitted changes){% endif %}, lab {{ c.identity.lab_version }}, seed {{ c.identity.seed }} |
| data_card.json sha256 | `{{ card_sha }}` |

## Training data

Only recordings whose rights holders granted consent for this use were fed to the model.
{{ c.sources | length }} recording(s), {{ total_seconds }} s of audio seen ({{ c.exposure.samples }} samples, {{ c.exposure.tokens }} tokens).

{% if c.sources %}| Recording | Artists | Rights holders | Licence | Seconds seen | Credit |
|---|---|---|---|---:|---|
{% for r in rows %}| {{ r.title }} (`{{ r.id }}`{% if r.isrc %}, ISRC {{ r.isrc }}{% endif %}) | {{ r.artists }} | {{ r.holders }} | {{ r.licence }} | {{ r.seconds }} | {{ r.credit }} |
{% endfor %}{% else %}No recordings: the weights carry no licensed audio.
{% endif %}
{% if inherited %}
### Inherited from the base checkpoint

`{{ c.lineage.parent_checkpoint.checkpoint_id }}` (data card sha256 `{{ c.lineage.parent_checkpoint.data_card_sha256 }}`) was trained on:

| Recording | Artists | Rights holders | Licence | Seconds seen | Credit |
|---|---|---|---|---:|---|
{% for r in inherited %}| {{ r.title }} (`{{ r.id }}`{% if r.isrc %}, ISRC {{ r.isrc }}{% endif %}) | {{ r.artists }} | {{ r.holders }} | {{ r.licence }} | {{ r.seconds }} | {{ r.credit }} |
{% endfor %}{% endif %}
Base model: `{{ c.lineage.base_model.id }}`, licence {{ c.lineage.base_model.licence }}; declared training data: {{ c.lineage.base_model.declared_training_data }}.

## Intended uses

Derived from every grant behind these weights (the intersection of what each allows):

- Purposes: {{ v.purposes | join(", ") if v.purposes else "none" }}
- Territories: {{ territories }}
- Valid until: {{ expiry }}
- When a grant ends: {{ v.on_termination or "n/a" }}

Any other use is out of scope. Consent can be revoked after this card was written; `lab audit` checks the ledger as it is now.

## Exclusions

{% if exclusions %}Recordings left out at clearance, by reason:

| Reason | Count |
|---|---:|
{% for reason, n in exclusions %}| {{ reason }} | {{ n }} |
{% endfor %}{% else %}None.
{% endif %}
## Licence

These weights are released under `{{ licence }}`. The recordings they were trained on stay under their own licences and grants (table above); credit lines are those the grants require.

## How to verify

```bash
lab audit <this folder>
```

checks `model.sig` (OpenSSF model-signing over every file), that `data_card.json` hashes to the sha256 above, and that consent held at training time and still holds now.
"""


def _row(r: SourceRow) -> dict[str, str]:
    return {
        "id": _cell(r.recording_id), "title": _cell(r.title), "isrc": _cell(r.isrc), "artists": _cell(r.artists),
        "holders": _cell(_holders(r)), "licence": _cell(r.licence), "seconds": _fmt_seconds(r.seconds_seen),
        "credit": _cell(r.credit),
    }


def model_card(
    card: DataCard,
    *,
    license: str,
    base_model: str | None,
    tags: Iterable[str] = (),
    data_card_sha256: str | None = None,
    license_link: str | None = None,
    model_name: str | None = None,
) -> str:
    """README.md for a checkpoint folder: Hub YAML metadata + a summary of the data card.

    license: SPDX expression for the weights. base_model: a Hub id (omitted when None).
    data_card_sha256: defaults to the sha256 of `dump_card(card)`, i.e. of the file `write_card` writes.
    """
    from huggingface_hub import ModelCard, ModelCardData

    card_sha = data_card_sha256 or bytes_sha256(card)
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *tags]))
    relation = {"finetune": "finetune", "adapter": "adapter"}.get(card.lineage.relation)
    lab_meta = {
        "schema": card.schema_id,
        "checkpoint_id": card.identity.checkpoint_id,
        "step": card.identity.step,
        "snapshot": card.snapshot.snapshot_id,
        "snapshot_merkle_root": card.snapshot.merkle_root,
        "ledger_head_hash": card.snapshot.ledger_head_hash,
        "data_card": "data_card.json",
        "data_card_sha256": card_sha,
        "signature": "model.sig",
        "licence_expression": license,
    }
    extra: dict[str, Any] = {"lab": lab_meta}
    if base_model and relation:
        extra["base_model_relation"] = relation
    data = ModelCardData(
        model_name=model_name or card.identity.checkpoint_id,
        base_model=base_model or None,
        library_name="transformers",
        pipeline_tag="text-to-audio",
        tags=all_tags,
        **hf_license(license, license_link),
        **extra,
    )
    v = card.validity
    seen = card.exposure.total_seconds
    verb = {"pretrain": "trained from scratch", "finetune": "fine-tuned", "adapter": "adapted (adapter weights)"}[
        card.lineage.relation
    ]
    summary = (
        f"A MusicGen checkpoint {verb} by `lab` on {len(card.sources)} consent-cleared recording(s) "
        f"from the `{card.snapshot.catalog}` catalogue ({_fmt_seconds(seen)} s of audio seen). "
        "The machine-readable record of what it was trained on, and under which consent, is "
        "`data_card.json`; `model.sig` signs every file in this folder."
    )
    rendered = ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=f"{card.identity.checkpoint_id}",
        summary=summary,
        c=card,
        v=v,
        rows=[_row(r) for r in card.sources],
        inherited=[_row(r) for r in card.lineage.inherited_sources],
        created=card.identity.created_at.isoformat().replace("+00:00", "Z"),
        cleared=card.snapshot.cleared_at.isoformat().replace("+00:00", "Z"),
        expiry=v.earliest_expiry.date().isoformat() if v.earliest_expiry else "no expiry",
        territories="worldwide" if v.territories == ["WW"] else (", ".join(v.territories) or "none"),
        total_seconds=_fmt_seconds(seen),
        exclusions=sorted(card.exclusions.items()),
        card_sha=card_sha,
        licence=license,
    )
    return str(rendered)


# --------------------------------------------------------------------------- Croissant

CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_FIELDS = (
    ("recording_id", "sc:Text", "catalogue id of the recording"),
    ("isrc", "sc:Text", "ISRC of the recording"),
    ("title", "sc:Text", "title"),
    ("artists", "sc:Text", "performing artists, comma separated"),
    ("audio_sha256", "sc:Text", "sha256 of the audio file as ingested"),
    ("licence", "sc:Text", "SPDX licence expression (LicenseRef-lab-* = a signed contract)"),
    ("grant_ids", "sc:Text", "consent grants in the rights ledger, comma separated"),
    ("rights_holders", "sc:Text", "rights holders with role, right and share"),
    ("seconds_seen", "sc:Float", "seconds of this recording the model saw"),
    ("credit", "sc:Text", "attribution the grant requires"),
)


def croissant(card: DataCard) -> dict[str, Any]:
    """A minimal Croissant 1.0 JSON-LD description of the training data actually used.

    The audio itself is not distributed, so the record set carries the sources inline (`data`),
    keyed by field id; responsible-AI facts go in the `rai:` properties.
    """
    snap = card.snapshot
    v = card.validity
    rs = "sources"
    fields = [
        {"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name, "description": desc, "dataType": dtype}
        for name, dtype, desc in _FIELDS
    ]
    rows = [
        {
            f"{rs}/recording_id": r.recording_id,
            f"{rs}/isrc": r.isrc or "",
            f"{rs}/title": r.title,
            f"{rs}/artists": ", ".join(r.artists),
            f"{rs}/audio_sha256": r.audio_sha256,
            f"{rs}/licence": r.licence,
            f"{rs}/grant_ids": ", ".join(r.grant_ids),
            f"{rs}/rights_holders": _holders(r),
            f"{rs}/seconds_seen": r.seconds_seen,
            f"{rs}/credit": r.credit,
        }
        for r in card.sources
    ]
    licences = sorted({r.licence for r in card.sources})
    excluded = ", ".join(f"{k}: {n}" for k, n in sorted(card.exclusions.items())) or "none"
    territories = "worldwide" if v.territories == ["WW"] else (", ".join(v.territories) or "none")
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "@id": f"urn:lab:snapshot:{snap.snapshot_id}:{card.identity.checkpoint_id}",
        "name": f"{snap.catalog}-{snap.snapshot_id}-{card.identity.checkpoint_id}",
        "description": (
            f"The {len(card.sources)} recording(s) from the '{snap.catalog}' catalogue that checkpoint "
            f"{card.identity.checkpoint_id} (step {card.identity.step}) was trained on, cleared under policy "
            f"'{snap.policy.name}' as snapshot {snap.snapshot_id}."
        ),
        "url": f"urn:lab:snapshot:{snap.snapshot_id}",
        "identifier": snap.merkle_root,
        "version": "1.0.0",
        "datePublished": snap.cleared_at.isoformat().replace("+00:00", "Z"),
        "license": licences,
        "keywords": ["music", "audio", "consent-cleared", "licensed"],
        "isLiveDataset": False,
        "rai:dataCollection": (
            "Recordings licensed by their rights holders through consent grants recorded in lab's "
            f"append-only, hash-chained rights ledger (head #{snap.ledger_head_seq}, {snap.ledger_head_hash}); "
            f"cleared against policy '{snap.policy.name}' at {snap.cleared_at.isoformat()}."
        ),
        "rai:dataCollectionType": "Licensed and consented recordings",
        "rai:dataUseCases": (
            f"Allowed purposes: {', '.join(v.purposes) or 'none'}; territories: {territories}; "
            f"valid until: {v.earliest_expiry.date().isoformat() if v.earliest_expiry else 'no expiry'}."
        ),
        "rai:dataLimitations": f"Recordings excluded at clearance by reason: {excluded}.",
        "rai:personalSensitiveInformation": (
            "Names of credited artists and rights holders, published with their consent; no other personal data."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Consent can be revoked or expire; revocations are new ledger events and `lab audit` "
            f"re-checks checkpoints against the ledger. On termination: {v.on_termination or 'n/a'}."
        ),
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": rs,
                "name": rs,
                "description": "one row per recording actually fed to the model",
                "key": {"@id": f"{rs}/recording_id"},
                "field": fields,
                "data": rows,
            }
        ],
    }
