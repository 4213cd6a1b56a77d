"""The embedded demo: a small synthesized catalogue and a ledger that exercises every rights case.

Dates are relative to `now`, so the demo is always "today": one grant expired last month,
another only starts next month, and so on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from stdnum.iso7064 import mod_11_2, mod_37_36

from ..util.atomic import write_text
from ..util.canonical import sha256_file
from .synth import demo_specs, render

CATALOG = "demo"
SAMPLE_RATE = 32000
SECONDS = 4.0
ISSUER = "lab rights desk"
ALL_USES = ["ai_training", "ai_generative_training", "ai_inference", "commercial_output"]

ARTISTS = [
    "Mara Quell",
    "The Low Orchard",
    "Ines Varga",
    "Kofi Mensah Trio",
    "Juniper Static",
    "Odile Baptiste",
    "Harbour Lights",
    "Tomasz Wren",
    "Saffron Delay",
    "Nilo Ahn",
    "Greywater Choir",
    "Lumen Fields",
]
LABELS = ["Northwind Records", "Fieldnote Music", "Tidewater Audio"]
PUBLISHERS = ["Open Stave Publishing", "Cedar Lane Songs"]
# Each label and publisher deals in its own currency (ISO 4217).
CURRENCY = {
    "Northwind Records": "GBP",
    "Fieldnote Music": "EUR",
    "Tidewater Audio": "USD",
    "Open Stave Publishing": "EUR",
    "Cedar Lane Songs": "USD",
}


# Made-up party ids of the right shape, check characters computed (python-stdnum): labels carry a DDEX
# party id, performers an ISNI, composers and publishers an IPI name number (11 digits).
def _dpid(k: int) -> str:
    body = f"PADPIDA20260{k + 1:05d}"
    return f"DPID:{body}{mod_37_36.calc_check_digit(body)}"


def _isni(k: int) -> str:
    body = f"00000004{k + 1:07d}"
    return f"ISNI:{body}{mod_11_2.calc_check_digit(body)}"


def _ipi(k: int) -> str:
    return f"IPI:{700_000_000 + 7919 * (k + 1):011d}"


PARTY_IDS = (
    {name: _dpid(k) for k, name in enumerate(LABELS)}
    | {name: _ipi(100 + k) for k, name in enumerate(PUBLISHERS)}
    | {("performer", name): _isni(k) for k, name in enumerate(ARTISTS)}
    | {("composer", name): _ipi(k) for k, name in enumerate(ARTISTS)}
)
# Splits per right (percent, decimal strings), cycled through the recordings.
MASTER_SPLITS = [("62.5", "37.5"), ("70", "30"), ("80", "20"), ("75", "25")]
COMPOSITION_SPLITS = [("50", "50"), ("40", "60"), ("33.333333", "66.666667")]

# Case per recording index; the rest are plain opt-ins. Every exclusion reason appears.
CASES = {
    3: "opted_out",
    4: "opted_out",
    7: "revoked",
    8: "revoked",
    11: "expired",
    12: "expired_event",
    15: "territory",
    16: "territory",
    19: "non_commercial",
    20: "non_commercial",
    23: "no_grant",
    24: "no_grant",
    27: "corrupt",
    30: "duplicate",  # same audio as recording 0
    31: "purpose",
    33: "not_yet_valid",
    34: "amended",
    35: "contract",
}


@dataclass
class DemoSource:
    root: Path
    metadata: Path
    ledger: Path
    n: int


# What the catalogue itself says about a few rows: facts lab carries but does not interpret.
EXTRA = {
    1: {"composer": "Anon.", "rights_notes": "sync rights cleared separately", "tags": ["study", "piano"]},
    2: {"composer": "Ines Varga", "source_url": "https://example.org/demo/0002", "recorded": 2024},
    5: {"source_url": "https://example.org/demo/0005", "rights_notes": "catalogue lists CC-BY-SA (to check)"},
}
# The catalogue's own licence text per row (the grant decides): the plain CC-BY-4.0 of the grants, what the
# non-commercial grants say, nothing for the contract deal, and one row that disagrees with its grant.
LICENCE_MISMATCH_ROW = 5


def _stated_licence(i: int) -> str | None:
    case = CASES.get(i)
    if i == LICENCE_MISMATCH_ROW:
        return "CC-BY-SA-4.0"
    return {"non_commercial": "CC-BY-NC-4.0", "contract": None}.get(case, "CC-BY-4.0")


def _rid(i: int) -> str:
    return f"demo-{i:04d}"


def _isrc(i: int) -> str:
    return f"GBLAB26{i:05d}"


def write_demo_source(folder: Path, now: datetime, n: int = 36, seed: int = 0) -> DemoSource:
    """Render audio + metadata.jsonl + ledger.jsonl into `folder` (audio under `audio/`)."""
    folder = Path(folder)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    specs = demo_specs(n, seed)
    meta, paths = [], []
    formats = ["wav", "wav", "flac", "ogg"]
    for i, spec in enumerate(specs):
        fmt = formats[i % len(formats)]
        rel = f"audio/{_rid(i)}.{fmt}"
        path = folder / rel
        if CASES.get(i) == "corrupt":
            noise = np.random.default_rng(i).integers(0, 256, 2048, dtype=np.uint8)
            path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(noise))
        elif CASES.get(i) == "duplicate":
            path = folder / f"audio/{_rid(i)}.{formats[0]}"
            rel = f"audio/{_rid(i)}.{formats[0]}"
            path.write_bytes((folder / paths[0]).read_bytes())
        else:
            sf.write(
                path,
                render(spec, SECONDS, SAMPLE_RATE),
                SAMPLE_RATE,
                subtype={"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[fmt],
            )
        paths.append(rel)
        artist = ARTISTS[i % len(ARTISTS)]
        meta.append(
            {
                "recording_id": _rid(i),
                "isrc": _isrc(i),
                "title": f"{spec.key} {spec.mode} study no. {i + 1}",
                "artists": [artist],
                "description": spec.caption(),
                "rights_holders": [LABELS[i % len(LABELS)], PUBLISHERS[i % len(PUBLISHERS)], artist],
                "licence": _stated_licence(i),
                "audio_path": rel,
            }
            | ({"extra": EXTRA[i]} if i in EXTRA else {})
        )
    metadata = folder / "metadata.jsonl"
    write_text(metadata, "".join(json.dumps(m) + "\n" for m in meta))
    events = _ledger_events(folder, meta, now)
    ledger = folder / "ledger.jsonl"
    write_text(ledger, "".join(json.dumps(e) + "\n" for e in events))
    return DemoSource(folder, metadata, ledger, n)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _parties(i: int, label: str, publisher: str, artist: str) -> list[dict]:
    m_label, m_artist = MASTER_SPLITS[i % len(MASTER_SPLITS)]
    c_pub, c_artist = COMPOSITION_SPLITS[i % len(COMPOSITION_SPLITS)]
    return [
        {"name": label, "role": "master_owner", "right": "master", "share": m_label, "party_id": PARTY_IDS[label]},
        {
            "name": artist,
            "role": "performer",
            "right": "master",
            "share": m_artist,
            "party_id": PARTY_IDS[("performer", artist)],
        },
        {
            "name": publisher,
            "role": "publisher",
            "right": "composition",
            "share": c_pub,
            "party_id": PARTY_IDS[publisher],
        },
        {
            "name": artist,
            "role": "composer",
            "right": "composition",
            "share": c_artist,
            "party_id": PARTY_IDS[("composer", artist)],
        },
    ]


def _compensation(i: int, label: str, publisher: str) -> list[dict]:
    """The mix: most masters paid per second trained and compositions a monthly flat fee; every sixth
    grant a revenue share on both rights; every ninth master and composition unpaid (`none`)."""
    m_cur, c_cur = CURRENCY[label], CURRENCY[publisher]
    if i % 9 == 8:
        return [{"right": "master", "model": "none"}, {"right": "composition", "model": "none"}]
    if i % 6 == 5:
        return [
            {"right": "master", "model": "revenue_share", "share": "12.5", "currency": m_cur},
            {"right": "composition", "model": "revenue_share", "share": "7.25", "currency": c_cur},
        ]
    rate = ("0.0020", "0.0035", "0.0015")[i % 3]
    pool = ("150.00", "90.00")[i % 2]
    return [
        {"right": "master", "model": "per_second_trained", "rate": rate, "currency": m_cur},
        {"right": "composition", "model": "flat_fee", "pool": pool, "currency": c_cur},
    ]


def _grant(i: int, m: dict, now: datetime, sha: str | None, **over) -> dict:
    artist = m["artists"][0]
    label, publisher = m["rights_holders"][0], m["rights_holders"][1]
    g = {
        "grant_id": f"G-{i:04d}",
        "version": 1,
        "issued_at": _iso(now - timedelta(days=200)),
        "issuer": ISSUER,
        "subject": {"recording_id": m["recording_id"], "catalog": CATALOG, "isrc": m["isrc"]}
        | ({"audio_sha256": sha} if sha else {}),
        "status": "opted_in",
        "parties": _parties(i, label, publisher, artist),
        "purposes": ALL_USES,
        "territories": ["WW"],
        "valid_from": _iso(now - timedelta(days=180)),
        "valid_until": _iso(now + timedelta(days=540)),
        "on_termination": "retrain" if i % 3 == 0 else "retain",
        "licence": "CC-BY-4.0",
        "attribution": f'"{m["title"]}" by {artist} ({label}), used with permission for AI training',
        "compensation": _compensation(i, label, publisher),
        "evidence": f"demo://consent-forms/{m['recording_id']}.pdf",
    }
    g.update(over)
    return g


def _ledger_events(folder: Path, meta: list[dict], now: datetime) -> list[dict]:
    events: list[dict] = []
    for i, m in enumerate(meta):
        case = CASES.get(i)
        path = folder / m["audio_path"]
        sha = sha256_file(path) if case != "corrupt" else None
        if case == "no_grant":
            continue
        if case == "opted_out":
            events.append(
                {
                    "kind": "grant",
                    "grant": _grant(
                        i,
                        m,
                        now,
                        sha,
                        status="opted_out",
                        purposes=[],
                        territories=[],
                        parties=[],
                        compensation=[],
                        attribution="",
                        evidence=f"demo://opt-outs/{m['recording_id']}.pdf",
                    ),
                }
            )
            # The label's catalogue grant exists too; the artist's opt-out must still win.
            events.append({"kind": "grant", "grant": _grant(i, m, now, sha, grant_id=f"G-{i:04d}-label")})
            continue
        over: dict = {}
        if case == "expired":
            over = {"valid_from": _iso(now - timedelta(days=400)), "valid_until": _iso(now - timedelta(days=30))}
        elif case == "territory":
            over = {"territories": ["JP", "KR"]}
        elif case == "non_commercial":
            over = {"licence": "CC-BY-NC-4.0", "purposes": ["ai_training", "ai_generative_training"]}
        elif case == "purpose":
            over = {"purposes": ["eval_only"]}
        elif case == "not_yet_valid":
            over = {"valid_from": _iso(now + timedelta(days=30))}
        elif case == "amended":
            over = {"territories": ["US"]}
        elif case == "contract":
            over = {"licence": "LicenseRef-lab-demo-catalogue-deal"}
        events.append({"kind": "grant", "grant": _grant(i, m, now, sha, **over)})
        if case == "revoked":
            events.append(
                {
                    "kind": "revoke",
                    "grant_id": f"G-{i:04d}",
                    "issuer": m["artists"][0],
                    "reason": "artist withdrew consent",
                    "effective_at": _iso(now - timedelta(days=2)),
                }
            )
        elif case == "expired_event":
            events.append(
                {
                    "kind": "expire",
                    "grant_id": f"G-{i:04d}",
                    "effective_at": _iso(now - timedelta(days=1)),
                    "reason": "label deal ended early",
                }
            )
        elif case == "amended":
            events.append(
                {
                    "kind": "amend",
                    "grant": _grant(
                        i,
                        m,
                        now,
                        sha,
                        version=2,
                        supersedes=f"G-{i:04d}",
                        territories=["WW"],
                        issued_at=_iso(now - timedelta(days=10)),
                    ),
                }
            )
    return events
