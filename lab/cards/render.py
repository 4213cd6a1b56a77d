"""Human- and hub-facing views of a data card: the Hugging Face model card and a Croissant description.

Both are pure functions of a `CardBundle` and cost O(rows) at most: the README lists a top-k of
the sources, Croissant describes sources.parquet's columns, never its rows. Nothing here touches
the network (`ModelCard.validate()` would call the Hub, so it is never called).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .files import LICENCE_FILE, CardBundle, card_bytes_sha256
from .licence import licence_keys
from .schema import SOURCES_FILE
from .sources import COLUMNS

DEFAULT_TAGS = ("music", "musicgen", "text-to-audio", "lab")

# Licence ids the Hub accepts in `license:` (the subset an SPDX id can map to).
_HF_LICENSES = {
    "apache-2.0",
    "mit",
    "afl-3.0",
    "artistic-2.0",
    "bsl-1.0",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd-3-clause-clear",
    "cc0-1.0",
    "cc-by-2.0",
    "cc-by-2.5",
    "cc-by-3.0",
    "cc-by-4.0",
    "cc-by-sa-3.0",
    "cc-by-sa-4.0",
    "cc-by-nc-2.0",
    "cc-by-nc-3.0",
    "cc-by-nc-4.0",
    "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0",
    "cdla-permissive-1.0",
    "cdla-permissive-2.0",
    "wtfpl",
    "ecl-2.0",
    "epl-1.0",
    "epl-2.0",
    "etalab-2.0",
    "eupl-1.1",
    "eupl-1.2",
    "agpl-3.0",
    "gpl-2.0",
    "gpl-3.0",
    "lgpl-2.1",
    "lgpl-3.0",
    "isc",
    "lppl-1.3c",
    "ms-pl",
    "mpl-2.0",
    "osl-3.0",
    "postgresql",
    "ofl-1.1",
    "ncsa",
    "unlicense",
    "zlib",
    "pddl",
    "odc-by",
    "odbl",
}
_SPDX_ALIASES = {
    "ODC-By-1.0": "odc-by",
    "ODbL-1.0": "odbl",
    "PDDL-1.0": "pddl",
    "OFL-1.1": "ofl-1.1",
    "LPPL-1.3c": "lppl-1.3c",
    "MS-PL": "ms-pl",
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


TOP_SOURCES = 50  # rows the README lists; the rest are in sources.parquet


def _cell(value: Any) -> str:
    """A value safe inside a markdown table cell."""
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else ("" if value is None else str(value))
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _holders(holders: list[dict[str, Any]]) -> str:
    return "; ".join(f"{h['name']} ({h['role']}, {h['right']} {h['share']:g}%)" for h in holders)


def _fmt_seconds(s: float) -> str:
    return f"{s:,.1f}"


def top_sources(table: pa.Table, limit: int, *, by: str = "seconds") -> list[dict[str, Any]]:
    """The first `limit` rows by seconds seen (descending) or by recording id, as dicts.
    O(rows): a top-k selection, never a full sort or a full conversion to Python."""
    keys = [("recording_id", "ascending"), ("seen_by", "ascending")]
    if by == "seconds":
        keys.insert(0, ("seconds_seen", "descending"))
    if limit <= 0 or table.num_rows == 0:
        return []
    top = pc.select_k_unstable(table, k=min(limit, table.num_rows), sort_keys=keys)
    top = table.take(top)
    return top.take(pc.sort_indices(top, sort_keys=keys)).to_pylist()


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
| Consent ledger | {{ ledger }} |
| Policy | {{ policy }} |
| Code | {{ code }} |
| data_card.json sha256 | `{{ card_sha }}` |
| sources.parquet sha256 | `{{ c.sources.sha256 }}` ({{ c.sources.rows }} rows) |

## Training data

Only recordings whose rights holders granted consent for this use were fed to the model.
This run saw {{ c.sources.own_rows }} recording(s), {{ total_seconds }} s of audio
({{ c.exposure.samples }} samples, {{ c.exposure.tokens }} tokens).
Every source, with its rights holders, shares, grants, terms and seconds seen, is a row of
`sources.parquet` (`pandas.read_parquet("sources.parquet")`, or `lab card show <this folder>`).

{% if rows %}{% if more %}The {{ rows | length }} recordings seen longest:

{% endif %}| Recording | Artists | Rights holders | Licence | Seconds seen | Credit |
|---|---|---|---|---:|---|
{% for r in rows %}{{ r }}
{% endfor %}{% if more %}
… and {{ more }} more in `sources.parquet`.
{% endif %}{% else %}No recordings: this run fed the weights no licensed audio.
{% endif %}
{% if inherited %}
### Inherited from the base checkpoint

`{{ c.lineage.parent_checkpoint.checkpoint_id }}`
(data card sha256 `{{ c.lineage.parent_checkpoint.data_card_sha256 }}`) and its ancestors
were trained on {{ inherited.rows }} recording(s), {{ inherited_seconds }} s seen; their rows are in
`sources.parquet` with `seen_by` naming the checkpoint that saw them ({{ inherited.seen_by | join(", ") }}).

{% endif %}
Base model: `{{ c.lineage.base_model.id }}`, licence {{ c.lineage.base_model.licence }};
declared training data: {{ c.lineage.base_model.declared_training_data }}.

## Intended uses

Derived from every grant behind these weights, inherited ones included (the intersection of what each allows):

- Purposes: {{ v.purposes | join(", ") if v.purposes else "none" }}
- Territories: {{ territories }}
- Valid until: {{ expiry }}
- When a grant ends: {{ v.on_termination or "n/a" }}

Any other use is out of scope. Consent can be revoked after this card was written;
`lab audit` checks the ledger as it is now.

## Exclusions

{% if exclusions %}Recordings left out at clearance, by reason:

| Reason | Count |
|---|---:|
{% for reason, n in exclusions %}| {{ reason }} | {{ n }} |
{% endfor %}{% else %}None.
{% endif %}
## Licence

{% if derived %}These weights are licensed `{{ licence }}` (licence class: {{ licence_class }}). The licence is derived,
not copied: the base model's licence ({{ c.licence.base }}) AND the licences of every recording the weights saw,
inherited ones included ({{ c.licence.sources | length }} distinct: {{ c.licence.sources | join("; ") or "none" }}).
A use must satisfy all of them, within the purposes and territories every grant allows (Intended uses above).
{% else %}These weights are released under `{{ licence }}`;
the licence their base and sources derive is `{{ c.licence.expression }}`.
{% endif %}
`LICENSE` in this folder lists the licences, the grants behind each and the credits the grants require;
the recordings themselves stay under their own licences and grants (`sources.parquet`).

## How to verify

```bash
lab audit <this folder>
```

checks `model.sig` (OpenSSF model-signing over every file), that `data_card.json` hashes to the
sha256 above and `sources.parquet` to the sha256 the card names, and that consent held at training
time and still holds now.
"""


def _row(r: dict[str, Any]) -> str:
    """One line of the README's sources table."""
    isrc = f", ISRC {_cell(r['isrc'])}" if r["isrc"] else ""
    cells = [
        f"{_cell(r['title'])} (`{_cell(r['recording_id'])}`{isrc})",
        _cell(r["artists"]),
        _cell(_holders(r["rights_holders"])),
        _cell(r["licence"]),
        _fmt_seconds(r["seconds_seen"]),
        _cell(r["credit"]),
    ]
    return "| " + " | ".join(cells) + " |"


def model_card(
    bundle: CardBundle,
    *,
    base_model: str | None,
    license: str | None = None,
    tags: Iterable[str] = (),
    data_card_sha256: str | None = None,
    license_link: str | None = None,
    model_name: str | None = None,
    top: int = TOP_SOURCES,
) -> str:
    """README.md for a checkpoint folder: Hub YAML metadata + a summary of the data card with the
    `top` sources by seconds seen (the rest are in sources.parquet).

    base_model: a Hub id (omitted when None). license: None (always, when writing a checkpoint) takes
    the card's derived licence (`card.licence`), which links the folder's LICENSE when it is not a
    single Hub licence id; a string overrides it, for previews.
    data_card_sha256: defaults to the sha256 data_card.json will have once written.
    """
    from huggingface_hub import ModelCard, ModelCardData

    card = bundle.card
    card_sha = data_card_sha256 or card_bytes_sha256(card)
    derived = license is None
    license = card.licence.expression if derived else license
    license_link = license_link or (LICENCE_FILE if derived else None)
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
        "sources": card.sources.file,
        "sources_sha256": card.sources.sha256,
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
        f"A MusicGen checkpoint {verb} by `lab` on {card.sources.own_rows} consent-cleared recording(s) "
        f"from the `{card.snapshot.catalog}` catalogue ({_fmt_seconds(seen)} s of audio seen). "
        "The machine-readable record of what it was trained on, and under which consent, is "
        "`data_card.json` with its rows in `sources.parquet`; `model.sig` signs every file in this folder."
    )
    rows = top_sources(bundle.own_sources(), top)
    cleared = card.snapshot.cleared_at.isoformat().replace("+00:00", "Z")
    policy = card.snapshot.policy
    inherited = card.lineage.inherited_sources
    rendered = ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=f"{card.identity.checkpoint_id}",
        summary=summary,
        c=card,
        v=v,
        rows=[_row(r) for r in rows],
        more=max(card.sources.own_rows - len(rows), 0),
        inherited=inherited,
        inherited_seconds=_fmt_seconds(inherited.total_seconds) if inherited else "",
        created=card.identity.created_at.isoformat().replace("+00:00", "Z"),
        cleared=cleared,
        expiry=v.earliest_expiry.date().isoformat() if v.earliest_expiry else "no expiry",
        territories="worldwide" if v.territories == ["WW"] else (", ".join(v.territories) or "none"),
        total_seconds=_fmt_seconds(seen),
        exclusions=sorted(card.exclusions.items()),
        ledger=f"head #{card.snapshot.ledger_head_seq} `{card.snapshot.ledger_head_hash[:16]}…`, cleared {cleared}",
        policy=f"{policy.name}: {', '.join(policy.purposes)} in {policy.territory}",
        code=(
            f"`{card.identity.code_commit}`{' (uncommitted changes)' if card.identity.code_dirty else ''}, "
            f"lab {card.identity.lab_version}, seed {card.identity.seed}"
        ),
        card_sha=card_sha,
        licence=license,
        licence_class=card.licence.licence_class,
        derived=derived,
    )
    return str(rendered)


# --------------------------------------------------------------------------- LICENSE


def _licence_link(key: str) -> str:
    if key.startswith("LicenseRef-"):
        return "a lab contract: its terms are the grants' purposes, territories and dates below"
    return f"https://spdx.org/licenses/{key}.html"


def licence_file(bundle: CardBundle) -> str:
    """The folder's LICENSE: the weights' derived licence, the uses every grant allows, each source
    licence with its grants and recording count, and every credit the grants require.

    O(rows) column kernels; the credits are all listed, however many (attribution is a term of the grants)."""
    card, table = bundle.card, bundle.sources
    lic, v = card.licence, card.validity
    base = card.lineage.base_model
    keys = sorted(licence_keys(lic.expression))
    lines = [
        f"Licence of the weights of checkpoint {card.identity.checkpoint_id} (derived by lab from its data card)",
        "",
        f"SPDX-License-Identifier: {lic.expression}",
        f"Licence class: {lic.licence_class}",
        "",
        "The weights carry every licence below at once (AND): the base model's and those of every recording",
        "they were trained on, inherited ones included. Derived in data_card.json (`licence`); the rows are",
        "in sources.parquet.",
        "",
        f"Base model: {base.id} ({base.kind}), licence {lic.base}",
        f"Recordings seen: {card.sources.rows} row(s) "
        f"({card.sources.own_rows} own, {card.sources.inherited_rows} inherited)",
        "",
        "Licences",
        *(f"  {k}: {_licence_link(k)}" for k in keys),
        "",
        "Uses every grant allows",
        f"  Purposes: {', '.join(v.purposes) or 'none'}",
        f"  Territories: {'worldwide' if v.territories == ['WW'] else (', '.join(v.territories) or 'none')}",
        f"  Valid until: {v.earliest_expiry.isoformat() if v.earliest_expiry else 'no expiry'}",
        f"  When a grant ends: {v.on_termination or 'n/a'}",
        "",
        "Source licences and the grants behind them",
    ]
    if table.num_rows:
        owner = pc.list_parent_indices(table["grant_ids"])
        flat = pa.table({"licence": table["licence"].take(owner), "grant_id": pc.list_flatten(table["grant_ids"])})
        grants = flat.group_by("licence", use_threads=False).aggregate([("grant_id", "distinct")])
        recs = table.group_by("licence", use_threads=False).aggregate([("recording_id", "count_distinct")])
        counts = dict(zip(recs["licence"].to_pylist(), recs["recording_id_count_distinct"].to_pylist()))
        for name, gids in sorted(zip(grants["licence"].to_pylist(), grants["grant_id_distinct"].to_pylist())):
            lines.append(f"  {name}: {counts[name]} recording(s); grants: {', '.join(sorted(gids))}")
    else:
        lines.append("  none: no recordings seen")
    credits = sorted(pc.unique(table["credit"]).to_pylist()) if table.num_rows else []
    credits = [c for c in credits if c and c.strip()]
    lines += ["", "Credits the grants require", *(f"  {c}" for c in credits or ["none"]), ""]
    return "\n".join(lines)


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

_DATA_TYPES = {"string": "sc:Text", "double": "sc:Float", "timestamp[us, tz=UTC]": "sc:Date"}


def _field(rs: str, name: str, dtype: pa.DataType, description: str) -> dict[str, Any]:
    """A Croissant field reading one column of sources.parquet (lists are `repeated`)."""
    field: dict[str, Any] = {
        "@type": "cr:Field",
        "@id": f"{rs}/{name}",
        "name": name,
        "description": description,
        "source": {"fileObject": {"@id": SOURCES_FILE}, "extract": {"column": name}},
    }
    if pa.types.is_list(dtype):
        field["repeated"] = True
        dtype = dtype.value_type
    if pa.types.is_struct(dtype):
        field["subField"] = [
            {
                "@type": "cr:Field",
                "@id": f"{rs}/{name}/{f.name}",
                "name": f.name,
                "dataType": _DATA_TYPES.get(str(f.type), "sc:Text"),
                "source": {"fileObject": {"@id": SOURCES_FILE}, "extract": {"column": name}},
            }
            for f in dtype
        ]
    else:
        field["dataType"] = _DATA_TYPES.get(str(dtype), "sc:Text")
    return field


def croissant(bundle: CardBundle) -> dict[str, Any]:
    """A Croissant 1.0 JSON-LD description of the training data actually used.

    The audio itself is not distributed; the record set describes the columns of sources.parquet
    (a FileObject with its sha256), so the document stays the same size at any number of sources.
    Responsible-AI facts go in the `rai:` properties.
    """
    card = bundle.card
    snap = card.snapshot
    v = card.validity
    rs = "sources"
    licences = pc.unique(bundle.sources["licence"])
    licences = sorted(licences.to_pylist()) if len(licences) <= 100 else ["see sources.parquet (licence column)"]
    excluded = ", ".join(f"{k}: {n}" for k, n in sorted(card.exclusions.items())) or "none"
    territories = "worldwide" if v.territories == ["WW"] else (", ".join(v.territories) or "none")
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "@id": f"urn:lab:snapshot:{snap.snapshot_id}:{card.identity.checkpoint_id}",
        "name": f"{snap.catalog}-{snap.snapshot_id}-{card.identity.checkpoint_id}",
        "description": (
            f"The {card.sources.rows} recording(s) that checkpoint {card.identity.checkpoint_id} "
            f"(step {card.identity.step}) was trained on ({card.sources.own_rows} by its own run, from the "
            f"'{snap.catalog}' catalogue cleared under policy '{snap.policy.name}' as snapshot {snap.snapshot_id}; "
            f"{card.sources.inherited_rows} inherited from its base checkpoint)."
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
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": SOURCES_FILE,
                "name": SOURCES_FILE,
                "description": "one row per recording a checkpoint in this lineage saw (Parquet, lab.source_row/1)",
                "contentUrl": SOURCES_FILE,
                "contentSize": f"{card.sources.bytes} B",
                "encodingFormat": "application/x-parquet",
                "sha256": card.sources.sha256,
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": rs,
                "name": rs,
                "description": "one row per (recording, checkpoint that saw it)",
                "key": [{"@id": f"{rs}/recording_id"}, {"@id": f"{rs}/seen_by"}],
                "field": [_field(rs, name, dtype, desc) for name, dtype, _, desc in COLUMNS],
            }
        ],
    }
