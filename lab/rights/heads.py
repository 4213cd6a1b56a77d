"""Signed ledger heads: the lab key vouches for the ledger's head after every write.

The hash chain proves that no event was changed *in place*; it cannot see a tail that was cut
off, or a chain re-hashed from an edited event onward by someone with write access to the
database. So after every write the lab key (EC P-256, the one that signs checkpoints) signs
the new head, as Certificate Transparency's logs sign their tree heads, into a log kept OUTSIDE
the database: one JSON line per write (`lab.ledger_head/1`), beside a SQLite file as
`<db>.heads.jsonl`, else under `$LAB_HOME/ledger-heads/` (see `lab.settings`).

A ledger verifies only if it still extends every signed head: each head's seq present with the
same hash. With a head signed after every write, the first failing head and the last good
one before it bound what was deleted or rewritten, down to one event (named by the event id the
head recorded) when consecutive writes were single events.

Verification can be incremental: the last head verified in full is remembered beside the log
(`<log>.verified.json`), and a later check re-hashes only the events after it (and checks the
heads signed since). Such a check proves the ledger still holds that head and extends every
newer signed head; an older event edited in place without re-hashing is caught by a full
`lab rights verify`. The remembered head is not secret and not signed: forging it only narrows
what is re-hashed, the newest signed head still binds the tail.
"""

from __future__ import annotations

import base64
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..cards.signing import PUBLIC_KEY_NAME, ensure_keypair, public_key_fingerprint
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json
from ..util.locks import file_lock
from ..util.timestamps import to_ts, utcnow
from .ledger import Ledger, Problem, VerifyReport

FORMAT = "lab.ledger_head/1"

__all__ = ["FORMAT", "HeadLog", "SignedHead", "default_head_log", "open_ledger", "verify_ledger"]


@dataclass(frozen=True)
class SignedHead:
    """One line of the log: the ledger's head after a write, signed by the lab key."""

    ledger: str  # Ledger.ledger_id: sha256 of the URL with its password hidden
    seq: int
    hash: str
    event_id: str  # of the head event: names it when it is later found deleted or rewritten
    signed_at: str
    key: str  # sha256 fingerprint of the signing public key
    signature: str  # base64 ECDSA-SHA256 over the canonical JSON of every other field
    format: str = FORMAT

    def body(self) -> bytes:
        d = asdict(self)
        d.pop("signature")
        return canonical_json(d)


class HeadLog:
    """The signed-head log of one ledger: `path` (JSONL, append-only) and the key pair in `key_dir`."""

    def __init__(self, path: str | os.PathLike, key_dir: str | os.PathLike):
        self.path = Path(path)
        self.key_dir = Path(key_dir)
        self._good: set[tuple[bytes, str, str]] = set()  # (body, signature, key) verified in this process

    def __repr__(self) -> str:
        return f"HeadLog({str(self.path)!r}, key_dir={str(self.key_dir)!r})"

    @property
    def state_path(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(".jsonl") + ".verified.json")

    @property
    def public_key_path(self) -> Path:
        return self.key_dir / PUBLIC_KEY_NAME

    @cached_property
    def _signer(self) -> tuple[ec.EllipticCurvePrivateKey, str]:
        keys = ensure_keypair(self.key_dir)
        key = serialization.load_pem_private_key(keys.private_path.read_bytes(), password=None)
        return key, keys.fingerprint

    def sign(self, ledger: str, seq: int, hash: str, event_id: str) -> SignedHead:
        """Sign (ledger, seq, hash, event_id) now and append it to the log (flushed to disk)."""
        key, fingerprint = self._signer
        head = SignedHead(
            ledger=ledger,
            seq=int(seq),
            hash=hash,
            event_id=event_id,
            signed_at=to_ts(utcnow()),
            key=fingerprint,
            signature="",
        )
        sig = key.sign(head.body(), ec.ECDSA(hashes.SHA256()))
        line = orjson.dumps({**asdict(head), "signature": base64.b64encode(sig).decode()}) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return SignedHead(**orjson.loads(line))

    def read(self) -> tuple[list[SignedHead], list[Problem]]:
        """Every head in the log, in file order, and a problem per line that is not a head."""
        if not self.path.is_file():
            return [], []
        heads, bad = [], []
        for n, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                heads.append(SignedHead(**{**d, "seq": int(d["seq"])}))
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
                bad.append(Problem(seq=0, problem=f"{self.path} line {n} is not a signed head ({type(exc).__name__})"))
        return heads, bad

    def check_signatures(self, heads: list[SignedHead]) -> tuple[list[SignedHead], list[Problem]]:
        """The heads whose signature verifies with the lab's public key, and a problem per other head."""
        if not heads:
            return [], []
        try:
            public = serialization.load_pem_public_key(self.public_key_path.read_bytes())
        except (OSError, ValueError) as exc:
            msg = f"cannot check {len(heads)} signed head(s): no public key at {self.public_key_path} ({exc})"
            return [], [Problem(seq=heads[0].seq, problem=msg)]
        fingerprint = public_key_fingerprint(public)
        good, out = [], []
        for h in heads:
            if (h.body(), h.signature, fingerprint) in self._good:  # a poll every few seconds need not re-verify
                good.append(h)
                continue
            if h.key != fingerprint:
                out.append(
                    Problem(
                        seq=h.seq,
                        event_id=h.event_id,
                        problem=f"signed head seq {h.seq} was signed by "
                        f"key {h.key[:12]}, not this lab's {fingerprint[:12]}",
                    )
                )
                continue
            try:
                public.verify(base64.b64decode(h.signature, validate=True), h.body(), ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                out.append(
                    Problem(
                        seq=h.seq,
                        event_id=h.event_id,
                        problem=f"signed head seq {h.seq}: the signature "
                        "does not verify (a forged or edited line in the head log)",
                    )
                )
                continue
            self._good.add((h.body(), h.signature, fingerprint))
            good.append(h)
        return good, out

    def last_verified(self) -> tuple[int, str] | None:
        """(seq, hash) of the head the last full or incremental verification ended at, if any."""
        try:
            d = orjson.loads(self.state_path.read_bytes())
            return int(d["seq"]), str(d["hash"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def remember_verified(self, seq: int, hash: str) -> None:
        if seq <= 0 or self.last_verified() == (int(seq), hash):
            return  # unchanged: an fsync'd rewrite per check would cost every warm consent answer ~10 ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.state_path, orjson.dumps({"seq": int(seq), "hash": hash, "verified_at": to_ts(utcnow())}))


def default_head_log(
    ledger: Ledger, *, home: str | os.PathLike | None = None, key_dir: str | os.PathLike | None = None
) -> HeadLog | None:
    """The head log lab uses for `ledger` (None for an in-memory SQLite ledger). Paths: see
    `lab.settings.ledger_heads_path`; the key pair is `key_dir`, else `<home>/keys`, else `lab.settings.keys_dir()`."""
    from ..settings import keys_dir, ledger_heads_path

    path = ledger_heads_path(ledger.engine.url, ledger.ledger_id, home)
    if path is None:
        return None
    if key_dir is None:
        key_dir = Path(home) / "keys" if home is not None else keys_dir()
    return HeadLog(path, key_dir)


def open_ledger(
    url: str | None = None, *, home: str | os.PathLike | None = None, key_dir: str | os.PathLike | None = None
) -> Ledger:
    """`Ledger(url)` with its signed-head log: what the CLI and the recipes open."""
    ledger = Ledger(url)
    ledger.heads = default_head_log(ledger, home=home, key_dir=key_dir)
    return ledger


def _bound(heads: list[SignedHead], failed: set[int], floor: int = 0) -> Problem | None:
    """The first signed head that fails and the last good one before it: what was deleted or rewritten."""
    bad = [h for h in heads if h.seq in failed]
    if not bad:
        return None
    first = min(bad, key=lambda h: h.seq)
    good = max((h.seq for h in heads if h.seq < first.seq and h.seq not in failed), default=floor)
    if first.seq - good == 1:
        return Problem(
            seq=first.seq,
            event_id=first.event_id,
            problem=f"event seq {first.seq} (event {first.event_id}) was deleted or rewritten after the "
            f"lab key signed it (signed head seq {first.seq} fails, seq {good} holds)",
        )
    return Problem(
        seq=good + 1,
        problem=f"an event in seq {good + 1}..{first.seq} was deleted or rewritten after the "
        f"lab key signed it (signed head seq {first.seq} fails, seq {good} holds)",
    )


def verify_ledger(
    ledger: Ledger,
    log: HeadLog | None = None,
    *,
    deep: bool = False,
    anchor: tuple[int, str] | None = None,
    incremental: bool = False,
    report: VerifyReport | None = None,
) -> VerifyReport:
    """The ledger's chain AND its signed heads (`log`, default `ledger.heads`), as one report.

    `report`: a full chain verification the caller just ran; only the heads are then checked
    (by seq lookup, no second scan). `incremental`: re-hash only the events after the last
    verified head (the whole chain the first time). A clean full or incremental pass is
    remembered as the new last verified head."""
    log = log if log is not None else ledger.heads
    if log is None:
        return report or ledger.verify(deep=deep, anchor=anchor)
    heads, bad_lines = log.read()  # before the chain: a head signed meanwhile is never ahead of what is read
    start = log.last_verified() if incremental and report is None else None
    checked = [h for h in heads if start is None or h.seq > start[0]]
    good, unsigned = log.check_signatures(checked)
    messages = bad_lines + unsigned
    anchors = [(h.seq, h.hash) for h in good]
    if report is None:
        report = ledger.verify(deep=deep, anchor=anchor, anchors=anchors, start=start)
        if start is not None and report.start_seq != start[0]:  # the last verified head itself is gone: name what
            return verify_ledger(ledger, log, deep=deep, anchor=anchor)
        failed = set(report.anchors_failed)
    else:
        found = ledger.hashes_at(s for s, _ in anchors)
        failed = {s for s, h in anchors if found.get(s, (None,))[0] != h}
        report = report.model_copy(deep=True)
        for s in sorted(failed):
            report.problems.append(Problem(seq=s, problem=f"signed head seq {s} is not held with its signed hash"))
            report.n_problems += 1
        report.anchors_failed = sorted(failed)
    lead = [p for p in [_bound(good, failed, report.start_seq)] if p is not None]
    lead += messages
    if lead:
        report.problems[:0] = lead
        report.n_problems += len(lead)
        report.ok = False
    if not heads and report.head_seq > 0:
        report.warnings.append(
            f"no signed heads in {log.path}: a cut tail or a re-hashed chain cannot be told "
            "from an intact one (heads are signed from the next write on)"
        )
    if report.ok:
        log.remember_verified(report.head_seq, report.head_hash)
    return report
