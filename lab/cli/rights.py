"""`lab rights ...`: the consent ledger from the command line.

Every command takes `--ledger URL` (default: $LAB_LEDGER_URL, else SQLite under $LAB_HOME)
and `--json`. Errors exit 1 with a message that names what went wrong.
"""

from __future__ import annotations

import getpass
import os
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import orjson
import typer
from pydantic import ValidationError
from rich.markup import escape
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..util.identifiers import as_isrc
from . import app
from .errors import LabTyper
from .output import console, emit_json, err_console, fail, table

rights_app = LabTyper(
    no_args_is_help=True,
    add_completion=False,
    help="Consent grants and revocations: the append-only, hash-chained rights ledger.",
)
app.add_typer(rights_app, name="rights")

LedgerOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ledger", help="SQLAlchemy URL of the ledger (default: $LAB_LEDGER_URL, else SQLite under $LAB_HOME)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

_SHA = re.compile(r"^[0-9a-fA-F]{64}$")


def _fail(message: str, as_json: bool, code: int = 1, **extra: Any) -> NoReturn:
    fail(message, code, as_json=as_json, **extra)  # output.fail escapes rich markup; code 2: bad input


@contextmanager
def _ledger(url: str | None, as_json: bool) -> Iterator[Any]:
    from ..rights.heads import open_ledger
    from ..rights.ledger import LedgerError, LedgerInputError

    try:
        ledger = open_ledger(url)  # signs its head after every write (lab.rights.heads)
    except (ArgumentError, SQLAlchemyError, OSError) as exc:
        bad_url = isinstance(exc, ArgumentError)  # an unparseable URL is bad input; an unreachable server refused
        _fail(f"cannot open ledger {url or '(default)'}: {exc}", as_json, 2 if bad_url else 1)
    try:
        yield ledger
    except LedgerInputError as exc:
        _fail(str(exc), as_json, 2, kind="bad_events")
    except LedgerError as exc:
        _fail(str(exc), as_json)
    except SQLAlchemyError as exc:
        _fail(f"ledger database error: {getattr(exc, 'orig', None) or exc}", as_json)
    finally:
        ledger.close()


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary_row(s) -> list[Any]:
    ev = s.event
    if s.kind in ("grant", "amend"):
        g = ev.grant
        subject = " ".join(f"{k}={v}" for k, v in g.subject.model_dump(exclude_none=True).items())
        detail = (
            f"v{g.version} {g.status} {subject} purposes={','.join(g.purposes) or '-'} "
            f"territories={','.join(g.territories) or '-'} licence={g.licence}"
            + (f" until={g.valid_until.date()}" if g.valid_until else "")
            + (f" supersedes={g.supersedes}" if g.supersedes and g.supersedes != g.grant_id else "")
        )
    else:
        detail = f"effective {ev.effective_at.isoformat()}: {ev.reason}"
    return [s.seq, s.recorded_at.strftime("%Y-%m-%d %H:%M:%S"), s.kind, s.grant_id, detail]  # table() escapes


def _print_events(title: str, stored: list, as_json: bool, **extra: Any) -> None:
    if as_json:
        emit_json({"ok": True, **extra, "events": [s.to_dict() for s in stored]})
        return
    if not stored:
        _say(f"{title}: no events")
        return
    table(title, ["seq", "recorded (UTC)", "kind", "grant", "detail"], [_summary_row(s) for s in stored])


@rights_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSONL, one event per line (a bare grant object is a grant event).")],
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate every line, then append them all in one transaction (nothing is written if any line is bad)."""
    with _ledger(ledger, json_) as L:
        stored = L.import_jsonl(file)
        seq, head = L.head()
        impacts = _impacts(L, stored)
    first = stored[0].seq if stored else None
    if json_:
        emit_json(
            {
                "ok": True,
                "imported": len(stored),
                "first_seq": first,
                "head_seq": seq,
                "head_hash": head,
                "impact": [r.to_dict() for r in impacts],
            }
        )
    else:
        span = f" (seq {first}..{stored[-1].seq})" if stored else ""
        _say(f"imported {len(stored)} event(s){span} from {file}; ledger head seq {seq} {head}")
        _print_impacts(impacts)


def _party(spec: str, as_json: bool) -> dict:
    parts = spec.rsplit(":", 3)
    if len(parts) != 4 or not parts[0]:
        _fail(
            f"--party {spec!r}: expected NAME:ROLE:RIGHT:SHARE, e.g. 'Acme Records:master_owner:master:100'", as_json, 2
        )
    name, role, right, share = parts
    try:
        Decimal(share)
    except InvalidOperation:
        _fail(f"--party {spec!r}: share {share!r} is not a number", as_json, 2)
    return {"name": name, "role": role, "right": right, "share": share}  # decimal text: records.Share checks it


@rights_app.command("grant")
def grant(
    grant_id: Annotated[
        Optional[str], typer.Option("--grant-id", help="Id of the grant (letters, digits, . _ : -).")
    ] = None,
    recording_id: Annotated[Optional[str], typer.Option("--recording-id")] = None,
    isrc: Annotated[Optional[str], typer.Option("--isrc")] = None,
    audio_sha256: Annotated[Optional[str], typer.Option("--audio-sha256")] = None,
    catalog: Annotated[Optional[str], typer.Option("--catalog", help="A whole-catalogue deal.")] = None,
    party: Annotated[
        Optional[list[str]],
        typer.Option("--party", help="NAME:ROLE:RIGHT:SHARE, repeatable; shares per right must sum to 100."),
    ] = None,
    purpose: Annotated[Optional[list[str]], typer.Option("--purpose", help="Repeatable, e.g. ai_training.")] = None,
    territory: Annotated[
        Optional[list[str]], typer.Option("--territory", help="ISO 3166-1 alpha-2 or WW; repeatable.")
    ] = None,
    valid_from: Annotated[Optional[str], typer.Option("--valid-from", help="ISO date/time (default: now).")] = None,
    valid_until: Annotated[
        Optional[str], typer.Option("--valid-until", help="ISO date/time (default: open-ended).")
    ] = None,
    licence: Annotated[Optional[str], typer.Option("--licence", help="SPDX expression or LicenseRef-lab-...")] = None,
    attribution: Annotated[Optional[str], typer.Option("--attribution")] = None,
    on_termination: Annotated[Optional[str], typer.Option("--on-termination", help="retain | retire | retrain")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="opted_in | opted_out")] = None,
    issuer: Annotated[Optional[str], typer.Option("--issuer", help="Who issued the grant.")] = None,
    evidence: Annotated[Optional[str], typer.Option("--evidence", help="Contract / signed form reference.")] = None,
    issued_at: Annotated[Optional[str], typer.Option("--issued-at", help="ISO date/time (default: now).")] = None,
    supersedes: Annotated[
        Optional[str], typer.Option("--supersedes", help="Record an amend of this grant_id instead of a new grant.")
    ] = None,
    version: Annotated[
        Optional[int], typer.Option("--version", help="Grant version (default 1; for an amend, one above the current).")
    ] = None,
    from_json: Annotated[
        Optional[Path],
        typer.Option(
            "--from-json", help="A JSON file holding one grant (or one grant/amend event); no other grant flags."
        ),
    ] = None,
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record a consent grant (or, with --supersedes, an amended version of one)."""
    from ..rights.ledger import format_validation_error
    from ..rights.records import parse_event
    from ..util.timestamps import utcnow

    flags = {
        "grant_id": grant_id,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "licence": licence,
        "attribution": attribution,
        "on_termination": on_termination,
        "status": status,
        "issuer": issuer,
        "evidence": evidence,
        "issued_at": issued_at,
        "supersedes": supersedes,
        "version": version,
    }
    subject = {"recording_id": recording_id, "isrc": isrc, "audio_sha256": audio_sha256, "catalog": catalog}
    lists = {"parties": party, "purposes": purpose, "territories": territory}
    if from_json is not None:
        given = [k for k, v in {**flags, **subject, **lists}.items() if v is not None]
        if given:
            _fail(f"--from-json takes the whole grant from the file; drop --{given[0].replace('_', '-')}", json_, 2)
        try:
            raw = orjson.loads(from_json.read_bytes())
        except OSError as exc:
            _fail(f"cannot read {from_json}: {exc.strerror or exc}", json_, 2)
        except orjson.JSONDecodeError as exc:
            _fail(f"{from_json}: invalid JSON: {exc}", json_, 2)
        if not isinstance(raw, dict):
            _fail(f"{from_json}: expected a JSON object", json_, 2)
        if "kind" not in raw:
            raw = {"kind": "amend" if raw.get("supersedes") else "grant", "grant": raw}
        if raw.get("kind") not in ("grant", "amend"):
            _fail(
                f"{from_json}: `lab rights grant` records grants and amends; use `lab rights revoke` "
                f"or `lab rights import` for {raw.get('kind')!r} events",
                json_,
                2,
            )
        source = str(from_json)
    else:
        now = utcnow().isoformat()
        g: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
        g.setdefault("issued_at", now)
        g.setdefault("valid_from", now)
        g["subject"] = {k: v for k, v in subject.items() if v is not None}
        g["parties"] = [_party(p, json_) for p in party or []]
        g["purposes"] = list(purpose or [])
        g["territories"] = list(territory or [])
        missing = [f"--{k.replace('_', '-')}" for k in ("grant_id", "issuer", "licence") if k not in g]
        if missing:
            _fail(f"missing {', '.join(missing)} (or give the whole grant with --from-json FILE)", json_, 2)
        raw = {"kind": "amend" if supersedes else "grant", "grant": g}
        source = "flags"
    with _ledger(ledger, json_) as L:
        g = raw.get("grant")
        if raw.get("kind") == "amend" and isinstance(g, dict) and "version" not in g and g.get("grant_id"):
            # An amend without --version: the next version of that grant (1 for a new replacement id).
            versions = [
                e.event.grant.version
                for e in L.grant_history(str(g["grant_id"]))
                if e.kind in ("grant", "amend") and e.grant_id == g["grant_id"]
            ]
            g["version"] = max(versions, default=0) + 1
        try:
            event = parse_event(raw)
        except ValidationError as exc:
            _fail("invalid grant:\n" + "\n".join(format_validation_error(exc, source)), json_, 2)
        stored = L.append(event)
    if json_:
        emit_json({"ok": True, **stored.to_dict()})
    else:
        _say(f"recorded {stored.kind} {stored.grant_id} v{event.grant.version} as seq {stored.seq} ({stored.hash})")


@rights_app.command("revoke")
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded verbatim).")],
    effective_at: Annotated[Optional[str], typer.Option("--effective-at", help="ISO date/time (default: now).")] = None,
    issuer: Annotated[Optional[str], typer.Option("--issuer", help="Who revoked it (default: current user).")] = None,
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a grant: a new ledger event; checkpoints trained under it are found by audit."""
    from ..rights.ledger import format_validation_error
    from ..rights.records import parse_event
    from ..util.timestamps import utcnow

    raw = {
        "kind": "revoke",
        "grant_id": grant_id,
        "reason": reason,
        "effective_at": effective_at or utcnow().isoformat(),
        "issuer": issuer or _whoami(),
    }
    try:
        event = parse_event(raw)
    except ValidationError as exc:
        _fail("invalid revocation:\n" + "\n".join(format_validation_error(exc, "flags")), json_, 2)
    with _ledger(ledger, json_) as L:
        stored = L.append(event)
        impacts = _impacts(L, [stored])
    if json_:
        emit_json({"ok": True, **stored.to_dict(), "impact": [r.to_dict() for r in impacts]})
    else:
        _say(f"revoked {grant_id} effective {event.effective_at.isoformat()} as seq {stored.seq} ({stored.hash})")
        _print_impacts(impacts)


def _impacts(ledger, stored: list) -> list:
    """What the recorded events touch among registered checkpoints (lab.audit.impact); [] without a registry."""
    from ..audit.impact import impact_of_events
    from ..registry import Registry

    try:
        with Registry() as registry:
            return impact_of_events(registry, ledger, stored)
    except Exception as exc:  # noqa: BLE001 - the event is recorded; `lab impact` can tell the rest
        err_console.print(f"warning: impact not computed ({exc}); run `lab impact GRANT_ID`", markup=False)
        return []


def _print_impacts(impacts: list) -> None:
    from .impact import print_impact

    for report in impacts:
        print_impact(report)


def _whoami() -> str:
    try:
        return f"{getpass.getuser()} (lab cli)"
    except Exception:  # noqa: BLE001  no user name in some containers
        return os.environ.get("USER", "lab cli")


@rights_app.command("show")
def show(
    recording: Annotated[str, typer.Argument(metavar="RECORDING_ID", help="Recording id, ISRC or audio sha256.")],
    policy: Annotated[str, typer.Option("--policy", help="Policy to judge it under (policy/NAME.yaml).")] = "research",
    catalog: Annotated[Optional[str], typer.Option("--catalog", help="Only this catalogue (default: all).")] = None,
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The recording's verdict under a policy now (why it is excluded), then every event whose grant names it."""
    from .verdicts import catalogue_rows, consent_verdicts, load_policy, print_verdicts

    kwargs = {
        "recording_id": recording,
        "isrc": as_isrc(recording),
        "sha256": recording.lower() if _SHA.match(recording) else None,
    }
    try:
        pol = load_policy(policy)
    except Exception as exc:  # noqa: BLE001 - a missing or invalid policy file is bad input
        _fail(f"policy {policy!r}: {str(exc).splitlines()[0]}", json_, code=2)
    rows, searched = catalogue_rows(recording, catalog)
    with _ledger(ledger, json_) as L:
        verdicts = consent_verdicts(rows, L, pol)
        stored = L.events_for_subject(**kwargs)
    if json_:
        emit_json(
            {
                "ok": True,
                "subject": recording,
                "policy": pol.name,
                "catalogs": searched,
                "verdicts": verdicts,
                "events": [s.to_dict() for s in stored],
            }
        )
        return
    if verdicts:
        print_verdicts(f"verdict for {recording} under policy '{pol.name}' now", verdicts, False)
    else:
        _say(f"{recording} is in no catalogue ({', '.join(searched) or 'none stored'}): no verdict, events only")
    _print_events(f"ledger events for {recording}", stored, json_, subject=recording)


@rights_app.command("history")
def history(
    grant: Annotated[
        Optional[str], typer.Option("--grant", help="Only this grant's lineage (amends, revocations).")
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the last N events.")] = None,
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The ledger in order, or one grant's history."""
    with _ledger(ledger, json_) as L:
        if grant:
            stored = L.grant_history(grant)
            if not stored:
                _fail(f"no grant {grant!r} in the ledger", json_)
            if limit:
                stored = stored[-limit:]
        else:
            stored = list(deque(L.events(), maxlen=limit) if limit else L.events())
    _print_events(
        f"history of {grant}" if grant else "ledger history", stored, json_, **({"grant": grant} if grant else {})
    )


@rights_app.command("verify")
def verify(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Chain integrity only (seq, links, hashes); skip re-deriving columns and re-validating payloads.",
        ),
    ] = False,
    anchor: Annotated[
        Optional[str],
        typer.Option(
            "--anchor", help="SEQ:HASH of a head remembered elsewhere (a snapshot, a data card); catches truncation."
        ),
    ] = None,
    ledger: LedgerOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recompute the hash chain and check every signed head. Exit 0 only when both hold; otherwise
    name the first event deleted or rewritten."""
    from ..rights.heads import verify_ledger

    anchor_t = None
    if anchor:
        seq_s, _, h = anchor.partition(":")
        if not seq_s.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", h):
            _fail(f"--anchor {anchor!r}: expected SEQ:HASH (64 lowercase hex)", json_, 2)
        anchor_t = (int(seq_s), h)
    with _ledger(ledger, json_) as L:
        report = verify_ledger(L, deep=not quick, anchor=anchor_t)
    data = report.model_dump(mode="json")
    if not json_:
        for w in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(w)}")
    if report.ok:
        if json_:
            emit_json(data)
        else:
            heads = "" if L.heads is None else f"; extends every signed head in {L.heads.path}"
            _say(
                f"ledger intact: {report.n_events} events, head seq {report.head_seq} {report.head_hash}"
                + ("" if report.deep else " (quick: chain only)")
                + heads
            )
        return
    p = report.problems[0]
    more = f" (+{report.n_problems - 1} more problem(s))" if report.n_problems > 1 else ""
    who = f"event {p.event_id}" if p.event_id else "event id unknown"
    message = f"ledger chain broken at seq {p.seq} ({who}): {p.problem}{more}"
    if not json_:
        for q in report.problems[1:10]:
            err_console.print(f"  seq {q.seq} ({q.event_id or '?'}): {escape(q.problem)}")
    data.pop("ok", None)
    _fail(message, json_, **data)
