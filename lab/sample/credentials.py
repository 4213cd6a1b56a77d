"""Content credentials for released outputs: a C2PA manifest in the audio file, and a JSON sidecar.

Every released WAV or FLAC carries a manifest signed offline by lab's local CA (`lab.sample.ca`) with
c2pa-python: a `c2pa.created` action whose digitalSourceType is trainedAlgorithmicMedia, the
checkpoint as an `inputTo` ingredient (its data-card digest in the ingredient's metadata), a
`cawg.training-mining` assertion, and `org.lab.provenance`, which holds what the gate decided and why
the output may exist (see `output_claims`). The sidecar `<file>.c2pa.json` holds the same claims and
the manifest's label, for tools that cannot read C2PA.

`verify_output` reads a file with the lab root as the only trust anchor and says `trusted`,
`tampered` (the audio or the manifest changed after signing), `missing` (no credential) or
`untrusted` (intact, but signed by a CA other than the given root). Nothing here reaches the network:
remote manifests and OCSP are switched off.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lab import __version__
from lab.sample.ca import ca_paths, ensure_ca, root_fingerprint
from lab.sample.records import OutputRecord
from lab.settings import lab_home
from lab.util import atomic

CREDENTIAL = "c2pa"  # OutputRecord.credential of a signed output
LAB_ASSERTION = "org.lab.provenance"
TRAINING_MINING = "cawg.training-mining"
CLAIMS_SCHEMA = "lab.output-claims/1"
SIDECAR_SCHEMA = "lab.content-credential/1"
SIDECAR_SUFFIX = ".c2pa.json"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {".wav": "audio/wav", ".flac": "audio/flac"}

# An output of a model trained on licensed recordings carries no licence of its own to train on: the
# grants cover the requested uses of this output, never further training, mining or inference on it.
# Unknown is most restrictive (DESIGN), so every CAWG entry is notAllowed.
TRAINING_MINING_ENTRIES = {
    f"cawg.{use}": {"use": "notAllowed"}
    for use in ("ai_training", "ai_generative_training", "ai_inference", "data_mining")
}

# Offline and strict: no remote manifest, no OCSP, no other host; trust is checked against the anchors given.
_OFFLINE = {
    "verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
    "core": {"allowed_network_hosts": []},
}

CredentialState = Literal["trusted", "tampered", "missing", "untrusted"]


class CredentialError(ValueError):
    """A file lab cannot sign or check (not WAV/FLAC, an output that was not released, claims C2PA would mangle)."""


class CredentialCheck(BaseModel):
    """What `verify_output` found. `claims` is what the file says (the lab assertion); believe it only when trusted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: CredentialState
    claims: dict[str, Any] | None = None
    detail: str
    manifest_label: str | None = None
    signer: str | None = None


def sidecar_path(dst: Path) -> Path:
    """`<dst>.c2pa.json`: where `sign_output` writes the sidecar of `dst`."""
    dst = Path(dst)
    return dst.with_name(dst.name + SIDECAR_SUFFIX)


def output_claims(record: OutputRecord) -> dict[str, Any]:
    """The lab assertion of a released output: gate decision, ledger head, checkpoint, uses, territory,
    replication scores and source credits. Nothing that depends on the signed file's bytes (its digest,
    path or sidecar) is in it: the manifest's own data hash covers the audio."""
    decision = record.decision
    return {
        "schema": CLAIMS_SCHEMA,
        "checkpoint_id": record.checkpoint_id,
        "data_card_sha256": record.data_card_sha256,
        "created_at": record.model_dump(mode="json")["created_at"],
        "prompt": record.prompt,
        "seed": record.seed,
        "duration_s": record.duration_s,
        "sample_rate": record.sample_rate,
        "uses": list(record.uses),
        "territory": record.territory,
        "ledger_head": {"seq": decision.ledger_head_seq, "hash": decision.ledger_head_hash},
        "decision": decision.model_dump(mode="json"),
        "replication": record.replication.model_dump(mode="json") if record.replication else None,
        "credits": list(record.credits),
    }


def sign_output(src: Path, dst: Path, record: OutputRecord, *, home: Path | None = None) -> Path:
    """Embed a signed C2PA manifest for `record` in the audio `src`, writing `dst` and its sidecar atomically.

    `src` and `dst` are WAV or FLAC of the same kind (`src` may be `dst`). The CA under `home`
    (default LAB_HOME) is created on first use. The signed file is read back with the lab root as
    trust anchor before it replaces `dst`: a credential that would not verify, or claims that would
    not read back as written, never reach a user. Returns the sidecar's path; the caller records
    `credential=CREDENTIAL`, `sidecar=` that path, and the digest of `dst` (signing changes the file).
    """
    import c2pa

    src, dst = Path(src), Path(dst)
    mime = _mime(dst)
    if _mime(src) != mime:
        raise CredentialError(f"{src} and {dst} must be the same audio format to sign")
    if record.kind != "released":
        raise CredentialError(f"only a released output is signed; record {record.record_id} is {record.kind}")
    home = Path(home) if home is not None else lab_home()
    ca = ensure_ca(home)
    claims = output_claims(record)
    _check_encodable(claims, LAB_ASSERTION)
    manifest = _manifest_definition(record, claims, dst.name)

    side = sidecar_path(dst)
    with atomic.staged_path(dst) as staged:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(b"es256", ca.chain.read_bytes(), ca.signer_key.read_bytes(), None)
        )
        with signer, _context(None) as ctx, c2pa.Builder(manifest, context=ctx) as builder:
            with open(src, "rb") as source, open(staged, "w+b") as out:
                builder.sign(signer, mime, source, out)
        check = verify_output(staged, root_cert=ca.root_cert, mime=mime)
        if check.state != "trusted" or check.claims != claims:
            why = check.detail if check.state != "trusted" else "the embedded claims do not read back as written"
            raise CredentialError(f"the credential of {dst} did not verify after signing: {why}")
        sidecar = {
            "schema": SIDECAR_SCHEMA,
            "file": dst.name,
            "manifest_label": check.manifest_label,
            "signer": check.signer,
            "root_sha256": root_fingerprint(ca.root_cert),
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
            "ingredient": manifest["ingredients"][0],
            "training_mining": {"entries": TRAINING_MINING_ENTRIES},
            "assertion": LAB_ASSERTION,
            "claims": claims,
        }
        atomic.write_bytes(side, (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
    return side


def verify_output(
    path: Path, *, root_cert: Path | None = None, home: Path | None = None, mime: str | None = None
) -> CredentialCheck:
    """Check the credential of `path` against the lab root (`root_cert`, default the CA under `home`/LAB_HOME).

    Raises FileNotFoundError for a missing file or root certificate, CredentialError for a file that
    is neither WAV nor FLAC. `mime` overrides the type taken from the suffix (a staged temp file).
    """
    import c2pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    mime = mime or _mime(path)
    root = (
        Path(root_cert) if root_cert is not None else ca_paths(Path(home) if home is not None else lab_home()).root_cert
    )
    if not root.is_file():
        raise FileNotFoundError(2, "no lab root certificate (sign an output first, or pass the root's path)", str(root))
    try:
        with _context(root.read_text()) as ctx, open(path, "rb") as stream:
            with c2pa.Reader(mime, stream, context=ctx) as reader:
                store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return CredentialCheck(state="missing", detail=f"{path.name} carries no content credential")
    except c2pa.C2paError as exc:
        # A file that once held a manifest but no longer parses has been changed after signing.
        if _has_jumbf(path):
            return CredentialCheck(state="tampered", detail=f"the credential in {path.name} is unreadable: {exc}")
        return CredentialCheck(state="missing", detail=f"{path.name} carries no readable content credential ({exc})")
    return _judge(path.name, store)


# --------------------------------------------------------------------------- internals


def _judge(name: str, store: dict[str, Any]) -> CredentialCheck:
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) or {}
    claims = next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") == LAB_ASSERTION), None)
    sig = manifest.get("signature_info") or {}
    signer = f"{sig.get('common_name')} ({sig.get('issuer')})" if sig else None
    failures = ((store.get("validation_results") or {}).get("activeManifest") or {}).get("failure") or []
    codes = [f.get("code", "") for f in failures]
    state_word = store.get("validation_state")
    common = {"claims": claims, "manifest_label": label, "signer": signer}
    integrity = [f for f in failures if not f.get("code", "").startswith("signingCredential.")]
    if integrity or state_word == "Invalid":
        first = integrity[0] if integrity else (failures[0] if failures else {"code": "invalid", "explanation": ""})
        return CredentialCheck(
            state="tampered",
            detail=f"{name} changed after signing: {first.get('code')} ({first.get('explanation', '')})",
            **common,
        )
    if state_word != "Trusted" or codes:
        why = ", ".join(codes) or f"validation state {state_word}"
        return CredentialCheck(
            state="untrusted", detail=f"{name} is intact but not signed under the lab root ({why})", **common
        )
    if claims is None:
        return CredentialCheck(
            state="untrusted", detail=f"{name} is signed under the lab root but has no lab claims", **common
        )
    return CredentialCheck(state="trusted", detail=f"{name} is intact and signed by {signer}", **common)


def _manifest_definition(record: OutputRecord, claims: dict[str, Any], title: str) -> dict[str, Any]:
    ingredient = {
        "title": record.checkpoint_id,
        "format": "application/octet-stream",
        "relationship": "inputTo",
        "instance_id": f"lab:checkpoint:{record.checkpoint_id}",
        "description": "the lab checkpoint that generated this audio",
        # c2pa-rs drops an ingredient's free `hash` field; metadata keeps namespaced keys as written.
        "metadata": {"org.lab.data_card_sha256": record.data_card_sha256},
    }
    return {
        "claim_generator_info": [{"name": "lab", "version": __version__}],
        "title": title,
        "ingredients": [ingredient],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": "lab", "version": __version__},
                        }
                    ]
                },
            },
            {"label": TRAINING_MINING, "data": {"entries": TRAINING_MINING_ENTRIES}},
            {"label": LAB_ASSERTION, "data": claims},
        ],
    }


@lru_cache(maxsize=8)
def _settings(anchors: str | None) -> str:
    cfg = json.loads(json.dumps(_OFFLINE))
    if anchors is not None:
        cfg["trust"] = {"trust_anchors": anchors}
    return json.dumps(cfg)


def _context(anchors: str | None):
    import c2pa

    return c2pa.Context.from_json(_settings(anchors))


def _mime(path: Path) -> str:
    mime = MIME.get(Path(path).suffix.lower())
    if mime is None:
        raise CredentialError(f"{path}: content credentials are for .wav or .flac files")
    return mime


def _has_jumbf(path: Path) -> bool:
    """Whether the file still holds a C2PA manifest store (JUMBF superbox labelled `c2pa`)."""
    with open(path, "rb") as f:
        data = f.read()
    return b"jumb" in data and b"c2pa" in data


def _check_encodable(value: Any, where: str) -> None:
    """c2pa-rs stores a JSON array of numbers as a CBOR byte string (floats are lost), so refuse one."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_encodable(item, f"{where}.{key}")
    elif isinstance(value, list):
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise CredentialError(f"{where} is a list of numbers, which C2PA would not read back as written")
        for i, item in enumerate(value):
            _check_encodable(item, f"{where}[{i}]")
