"""The sampling gate: may this checkpoint be sampled, for these uses, in this territory, now?

Nothing is generated before it answers, and there is no way around it (no override flag exists).
Every check runs even when an earlier one fails, so a refusal names everything that is wrong:

1. signature — the folder verifies under the lab key (OpenSSF model-signing over every file);
2. card — data_card.json + sources.parquet validate and the COMPLETE marker checks out;
3. registry — the checkpoint (or an ancestor) is not retired by its last recorded audit;
4. consent — every source, own and inherited, clears NOW for every requested use in the
   territory (`lab.rights.consent.check_sources`, clearance's reason vocabulary);
5. licence — the weights' derived licence class allows the uses (`lab.rights.licences`).

The signature check may reuse a receipt (see `signature_receipt`); consent is never cached:
each call asks the ledger as it is now, re-hashing only the events since the last verified head.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc

from ..cards import CardError, card_sha256, load_card
from ..cards.signing import DEFAULT_SIGNATURE, public_key_fingerprint, verify_folder
from ..checkpoint import is_complete
from ..registry.store import Registry
from ..rights.consent import LedgerBroken, check_sources
from ..rights.ledger import Ledger
from ..rights.licences import LicenceClass
from ..rights.policy import Policy
from ..util.atomic import write_bytes
from .records import GateDecision, Refusal

CHECKS = ("signature", "card", "registry", "consent", "licence")
RECEIPT_SCHEMA = "lab.signature-receipt/1"
# Refusals listed per check; the consent check counts the rest in its detail.
LISTED = 1000

# What each use needs of a licence class. A trained model is a derivative work, so no_derivatives
# never clears; unknown fails closed (the Data Provenance Initiative's rule); commercial output
# needs a class that allows commercial use.
_NEVER = {LicenceClass.no_derivatives, LicenceClass.unknown}
_NOT_COMMERCIAL = _NEVER | {LicenceClass.non_commercial}


class GateInputError(ValueError):
    """The request itself is malformed (unknown use, bad territory): bad input, not a refusal."""


def refused_classes(uses: Iterable[str]) -> set[LicenceClass]:
    """Licence classes that refuse at least one of `uses`."""
    return set(_NOT_COMMERCIAL if "commercial_output" in uses else _NEVER)


def sampling_policy(uses: list[str], territory: str, licence_classes: dict[str, str] | None = None) -> Policy:
    """The policy the gate asks consent under: the requested uses in the territory, accepting every
    licence class that allows them, with the licence-id overrides the checkpoint was cleared under."""
    refused = refused_classes(uses)
    accept = [c.name for c in LicenceClass if c not in refused]
    try:
        return Policy(
            name="sample",
            purposes=list(uses),
            territory=territory,
            accept_licence_classes=accept,
            licence_classes=licence_classes or {},
        )
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else None
        where = ".".join("use" if part == "purposes" else str(part) for part in first["loc"]) if first else ""
        msg = f"{where}: {first['msg'].removeprefix('Value error, ')}" if first else str(exc)
        raise GateInputError(f"sampling request: {msg}") from None


# ----------------------------------------------------------------------------- signature receipts


def _stat_listing(folder: Path) -> dict[str, list[int]] | None:
    """Relative path → (size, mtime_ns, inode, ctime_ns) of every file; None if anything is not a
    plain file (a symlink or special file is never trusted from a receipt). ctime is beside the
    brief's (size, mtime_ns, inode): `touch -d` can restore an mtime, nothing restores a ctime."""
    out: dict[str, list[int]] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            st = p.lstat()
            if name in dirs:
                if not p.is_dir() or p.is_symlink():
                    return None
                continue
            if not (st.st_mode & 0o170000 == 0o100000):  # S_ISREG
                return None
            out[p.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    return dict(sorted(out.items()))


def _receipt_path(home: Path, folder: Path, key_fp: str) -> Path:
    name = hashlib.sha256(f"{folder}\x1f{key_fp}".encode()).hexdigest()[:32]
    return home / "cache" / "signatures" / f"{name}.json"


def signature_receipt(
    folder: Path, public_key: Path, home: Path | None, listing: dict[str, list[int]] | None = None
) -> tuple[bool, str]:
    """(ok, detail) of the folder's signature under `public_key`, verified in full unless a receipt
    under `home` says it verified for these very files (same paths, sizes, mtimes, inodes, ctimes)
    under this key (`listing`: the folder's `_stat_listing`, when the caller has it). A receipt is
    written only after a full pass over files that did not change while they were hashed. Like the
    snapshot receipts (`lab.snapshot.read`), it is not secret and not signed: forging one needs write
    access to LAB_HOME, which holds the signing key itself."""
    folder = Path(folder).resolve()
    try:
        key_fp = public_key_fingerprint(public_key)
    except (OSError, ValueError, TypeError):
        key_fp = None
    if listing is None and folder.is_dir():
        listing = _stat_listing(folder)
    before = listing if home is not None and key_fp else None
    path = _receipt_path(Path(home), folder, key_fp) if before is not None else None
    want = {"schema": RECEIPT_SCHEMA, "folder": str(folder), "key": key_fp, "files": before}
    if path is not None:
        try:
            if orjson.loads(path.read_bytes()) == want:
                return True, f"signature valid over {len(before) - 1} files (receipt: unchanged since verified)"
        except (OSError, orjson.JSONDecodeError):
            pass
    result = verify_folder(folder, public_key)
    if result.ok and path is not None and _stat_listing(folder) == before and DEFAULT_SIGNATURE in before:
        write_bytes(path, orjson.dumps(want))
    return result.ok, result.reason


# A validated card per folder, kept in this process (`lab serve`, benchmarks) while the folder's stat listing
# is the same: JSON Schema + pydantic + the sources' value checks cost more than every other check together.
_CARDS: dict[str, tuple[dict[str, list[int]], Any, str]] = {}
_CARDS_KEPT = 64


def _card(folder: Path, listing: dict[str, list[int]] | None) -> tuple[Any, str]:
    """(CardBundle, data_card.json sha256) of `folder`; raises CardError."""
    key = str(folder.resolve())
    held = _CARDS.get(key)
    if held is not None and listing is not None and held[0] == listing:
        return held[1], held[2]
    bundle, sha = load_card(folder), card_sha256(folder)
    if listing is not None:
        _CARDS.pop(key, None)
        while len(_CARDS) >= _CARDS_KEPT:
            _CARDS.pop(next(iter(_CARDS)))
        _CARDS[key] = (listing, bundle, sha)
    return bundle, sha


# ----------------------------------------------------------------------------- registry status

# The registry keeps an audit's failing checks, not its status; the status is in the consent_now
# check's detail, which is lab's own wording (`lab.audit.verify._consent_detail`).
_STATUS_IN_DETAIL = re.compile(r"status (ok|retained|retrain|retired)\b")


def audit_status(audit: dict[str, Any] | None) -> str | None:
    if not audit:
        return None
    summary = audit.get("summary") or {}
    if summary.get("status"):
        return summary["status"]
    for failed in summary.get("failed", []):
        if failed.get("name") == "consent_now":
            m = _STATUS_IN_DETAIL.search(failed.get("detail", ""))
            if m:
                return m.group(1)
    return "ok" if audit.get("ok") else None


def registry_status(registry: Registry, checkpoint_id: str, card_sha: str | None) -> tuple[bool, str]:
    """(ok, detail): refused when the checkpoint's last recorded audit (of this very card) or an
    ancestor's says retired — weights trained from retired weights are retired too (`lab impact`)."""
    row = registry.checkpoint(checkpoint_id)
    if row is None:
        return True, f"{checkpoint_id} is not in the registry ({registry!r}): no status recorded against it"
    audits = registry.audits()
    chain, seen = [row], {checkpoint_id}
    while chain[-1].get("parent_id") and chain[-1]["parent_id"] not in seen:
        seen.add(chain[-1]["parent_id"])
        parent = registry.checkpoint(chain[-1]["parent_id"])
        if parent is None:
            break
        chain.append(parent)
    for i, ck in enumerate(chain):
        audit = audits.get(ck["checkpoint_id"])
        if i == 0 and audit and card_sha and audit.get("data_card_sha256") not in (None, card_sha):
            audit = None  # an audit of another copy of the card says nothing about this one
        if audit_status(audit) == "retired":
            who = "its last audit" if i == 0 else f"ancestor {ck['checkpoint_id']}'s last audit"
            return False, f"retired: {who} ({audit['audited_at']}) found a source under on_termination retire"
    audited = audits.get(checkpoint_id)
    when = f"last audit {audited['audited_at']}: {audit_status(audited) or 'failed'}" if audited else "never audited"
    return True, f"registered, not retired ({when})"


# ----------------------------------------------------------------------------- the gate


def _consent(
    bundle, ledger: Ledger, policy: Policy, at: datetime, refusals: list[Refusal]
) -> tuple[bool, str, tuple[int, str] | None]:
    keys = ["recording_id", "isrc", "audio_sha256", "catalog"]  # each recording once, own or inherited
    sources = bundle.sources.select(keys).group_by(keys, use_threads=False).aggregate([])
    try:
        answer = check_sources(sources, ledger, policy, at=at, incremental=True)
    except LedgerBroken as exc:
        refusals.append(Refusal(check="consent", reason="ledger_broken", detail=str(exc)))
        return False, str(exc), None
    bad = answer.refused().sort_by("recording_id")
    if bad.num_rows == 0:
        said = f"all {sources.num_rows} sources clear now for {', '.join(policy.purposes)} in {policy.territory}"
        return True, said, answer.ledger_head
    rows = bundle.sources
    named = rows.filter(pc.is_in(rows["recording_id"], value_set=bad["recording_id"].slice(0, LISTED)))
    grants: dict[tuple[str, str], set[str]] = {}
    for r in named.select(["recording_id", "catalog", "grant_ids"]).to_pylist():
        grants.setdefault((r["recording_id"], r["catalog"]), set()).update(r["grant_ids"] or [])
    for r in bad.slice(0, LISTED).to_pylist():
        g = sorted(grants.get((r["recording_id"], r["catalog"] or ""), ()))
        refusals.append(
            Refusal(
                check="consent",
                reason=r["reason"] or "not_cleared",
                detail=r["detail"] or r["reason"] or "does not clear",
                recording_id=r["recording_id"],
                grant_id=",".join(g) or None,
            )
        )
    reasons = pc.value_counts(bad["reason"].fill_null("not_cleared")).to_pylist()
    counts = ", ".join(f"{d['counts']} {d['values']}" for d in reasons)
    return False, f"{bad.num_rows} of {sources.num_rows} sources do not clear now ({counts})", answer.ledger_head


def check_gate(
    folder: str | Path,
    *,
    uses: Iterable[str],
    territory: str,
    ledger: Ledger,
    registry: Registry | None = None,
    public_key: str | Path,
    at: datetime | None = None,
    home: str | Path | None = None,
) -> GateDecision:
    """Every check of the gate on `folder`, for `uses` in `territory` at `at` (default now).

    `ledger`: opened with its signed heads (`lab.rights.heads.open_ledger`). `registry`: None skips
    the registry check (said so in its detail). `home`: LAB_HOME for signature receipts (None: every
    call verifies in full). Raises GateInputError for an unknown use or territory (bad input)."""
    folder = Path(folder)
    at = at or datetime.now(timezone.utc)
    uses = sorted(dict.fromkeys(uses))
    policy = sampling_policy(uses, territory)  # validates the request before anything is read
    checks: dict[str, str] = {}
    refusals: list[Refusal] = []

    def fail(check: str, reason: str, detail: str) -> None:
        checks[check] = detail
        refusals.append(Refusal(check=check, reason=reason, detail=detail))

    listing = _stat_listing(folder) if folder.is_dir() else None
    ok, detail = signature_receipt(folder, Path(public_key), Path(home) if home is not None else None, listing)
    if ok:
        checks["signature"] = "ok"
    else:
        fail("signature", "signature", detail)

    bundle = card_sha = None
    try:
        bundle, card_sha = _card(folder, listing)
    except CardError as exc:
        fail("card", "card", f"data card does not validate: {'; '.join(exc.errors)[:300]}")
    if bundle is not None:
        if is_complete(folder):
            checks["card"] = "ok"
        else:
            fail("card", "incomplete", "no valid COMPLETE marker: an interrupted or altered write")
    card = bundle.card if bundle is not None else None
    checkpoint_id = card.identity.checkpoint_id if card is not None else folder.name

    if registry is None:
        checks["registry"] = "ok"
    elif card is None:
        fail("registry", "card", "not checked: no valid data card names the checkpoint")
    else:
        ok, detail = registry_status(registry, checkpoint_id, card_sha)
        if ok:
            checks["registry"] = "ok"
        else:
            fail("registry", "retired", detail)

    head = None
    if card is None:
        fail("consent", "card", "not checked: no valid data card lists the sources")
        fail("licence", "card", "not checked: no valid data card states the weights' licence")
    else:
        policy = sampling_policy(uses, territory, card.snapshot.policy.contracts)
        ok, detail, head = _consent(bundle, ledger, policy, at, refusals)
        checks["consent"] = "ok" if ok else detail
        klass = LicenceClass[card.licence.licence_class]
        blocked = sorted(u for u in uses if klass in refused_classes([u]))
        if blocked:
            fail(
                "licence",
                "licence_not_accepted",
                f"weights licence {card.licence.expression} is {klass.name}: it does not allow {', '.join(blocked)}",
            )
        else:
            checks["licence"] = "ok"

    return GateDecision(
        allowed=not refusals,
        checkpoint_id=checkpoint_id,
        checkpoint_folder=str(folder),
        data_card_sha256=card_sha,
        uses=uses,
        territory=policy.territory,
        at=at,
        ledger_head_seq=head[0] if head else None,
        ledger_head_hash=head[1] if head else None,
        checks={k: checks[k] for k in CHECKS},
        refusals=refusals,
    )


def refusal_lines(decision: GateDecision) -> list[str]:
    """One line per refusal naming the check, recording, grant and reason (what `lab sample` prints)."""
    out = []
    for r in decision.refusals:
        who = f"recording {r.recording_id}" + (f" (grant {r.grant_id})" if r.grant_id else "") if r.recording_id else ""
        out.append(f"refused [{r.check}] {who + ': ' if who else ''}{r.reason}: {r.detail}")
    return out


__all__ = ["CHECKS", "GateInputError", "check_gate", "refusal_lines", "registry_status", "sampling_policy"]
