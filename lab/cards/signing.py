"""Sign and verify a checkpoint folder with OpenSSF `model-signing` and an offline EC key.

The signature (`model.sig`, a sigstore bundle holding a DSSE envelope around an in-toto
statement) covers every file in the folder, recursively, COMPLETE included; the signature file
itself is the only exception. Nothing is left out by name: a `.git/` or `.cache/` a copy tool
adds is an unsigned file like any other (verification says "extra"), because a loader may read
it and nothing in the folder should be trusted without the signature. model-signing ignores
some of these by default, so the ignore list is always passed explicitly. Nothing here talks
to sigstore or any server: keys are local PEM files.

Hashing: sha256 over each whole file, files hashed in parallel on a thread pool (`hashlib`
releases the GIL; transformers already splits large weights into several files). Each
manifest digest is then exactly what `sha256sum` prints, so anyone can cross-check a
checkpoint without lab. We do not use model-signing's shard serialization: it is faster on
one huge file, but it leaves empty files out of the manifest, so an empty file could be
added or removed without breaking the signature. The serialization is recorded in the
signed manifest and verification takes it from there, so a change of default here never
invalidates older signatures (and a sharded signature is still checked, plus an explicit
empty-file check).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab.util import atomic
from lab.util.locks import file_lock

PRIVATE_KEY_NAME = "signing_key.pem"
PUBLIC_KEY_NAME = "signing_key.pub.pem"
DEFAULT_SIGNATURE = "model.sig"
HASH_ALGORITHM = "sha256"

VerifyKind = Literal[
    "ok",
    "missing_signature",  # no signature file
    "missing_key",  # the public key file is absent or unreadable
    "malformed_signature",  # the signature file does not parse as a bundle
    "wrong_key",  # signed by another key
    "invalid_signature",  # the bundle's signature does not match its payload
    "policy",  # validly signed, but the signature leaves out files lab requires signed
    "modified",  # a signed file's contents changed
    "extra",  # a file that was not signed is present
    "missing",  # a signed file is absent
    "mismatch",  # more than one of modified / extra / missing
    "unreadable",  # a symlink or special file in the folder
    "error",  # anything else
]


class SignatureError(Exception):
    """Signing failed, or `require_valid` found the folder's signature invalid."""

    def __init__(self, message: str, result: VerifyResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    fingerprint: str  # sha256 hex of the DER SubjectPublicKeyInfo


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    reason: str
    files: int = 0  # files covered by the signature (0 when it could not be read)
    kind: VerifyKind = "ok"
    modified: tuple[str, ...] = field(default=())
    extra: tuple[str, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.ok


# --------------------------------------------------------------------------- keys


def public_key_fingerprint(public_key) -> str:
    """sha256 of the DER SubjectPublicKeyInfo of an EC public key (object or PEM path)."""
    if isinstance(public_key, (str, os.PathLike)):
        public_key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ensure_keypair(key_dir: Path) -> KeyPair:
    """Return the EC P-256 signing key pair under key_dir, creating it on first use.

    The private key is the source of truth: a missing or stale public key file is rewritten
    from it. The private key file is written atomically with mode 0600 (tightened if found
    looser); the directory is created 0700.
    """
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path, pub_path = key_dir / PRIVATE_KEY_NAME, key_dir / PUBLIC_KEY_NAME
    with file_lock(key_dir / ".keys.lock"):  # DDP ranks calling at once agree on one key
        if priv_path.exists():
            private_key = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
            if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name not in (
                "secp256r1",
                "secp384r1",
                "secp521r1",
            ):
                raise SignatureError(f"{priv_path} is not an EC P-256/384/521 key (model-signing needs one)")
            if stat.S_IMODE(priv_path.stat().st_mode) & 0o077:
                os.chmod(priv_path, 0o600)
        else:
            private_key = ec.generate_private_key(ec.SECP256R1())
            pem = private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            atomic.write_bytes(priv_path, pem, mode=0o600)  # never readable by others, whatever the umask
        pub_pem = _public_pem(private_key)
        if not pub_path.exists() or pub_path.read_bytes() != pub_pem:
            atomic.write_bytes(pub_path, pub_pem)
    return KeyPair(priv_path, pub_path, public_key_fingerprint(private_key.public_key()))


# --------------------------------------------------------------------------- hashing


def _check_signature_name(signature_name: str) -> None:
    if not signature_name or "/" in signature_name or signature_name in (".", ".."):
        raise ValueError(f"signature_name must be a plain file name, got {signature_name!r}")


def _allowed_ignores(signature_name: str) -> set[str]:
    # lab.checkpoint writes COMPLETE before it signs: the marker is covered like every other file.
    return {signature_name}


def _hashing_config(signature_name: str, serialization_params: dict | None = None):
    """The hashing config for signing (defaults) or for verifying (the signed parameters)."""
    from model_signing import hashing

    params = serialization_params or {"method": "files", "hash_type": HASH_ALGORITHM}
    cfg = hashing.Config()
    if params.get("method") == "shards":
        cfg.use_shard_serialization(
            hashing_algorithm=params.get("hash_type", HASH_ALGORITHM), shard_size=int(params["shard_size"])
        )
    elif params.get("method") == "files":
        cfg.use_file_serialization(hashing_algorithm=params.get("hash_type", HASH_ALGORITHM))
    else:
        raise ValueError(f"unknown serialization method {params.get('method')!r}")
    return cfg.set_ignored_paths(paths=sorted(_allowed_ignores(signature_name)), ignore_git_paths=False)


def sign_folder(folder: Path, private_key: Path, signature_name: str = DEFAULT_SIGNATURE) -> Path:
    """Sign every file under folder (recursively) except the signature; return its path.

    The bundle is written beside the folder first and moved in with one rename, so a crash
    never leaves a half-written signature (a stale one is simply replaced).
    """
    from model_signing import signing

    folder, private_key = Path(folder), Path(private_key)
    _check_signature_name(signature_name)
    if not folder.is_dir():
        raise SignatureError(f"not a folder: {folder}")
    sig_path = folder / signature_name
    # Staged beside the folder, not in it, so the bundle does not sign its own temp file.
    with atomic.staged_path(sig_path, stage_in=folder.parent) as tmp:
        try:
            (
                signing.Config()
                .use_elliptic_key_signer(private_key=private_key)
                .set_hashing_config(_hashing_config(signature_name))
                .sign(folder, tmp)
            )
        except (ValueError, TypeError, OSError) as exc:
            raise SignatureError(f"could not sign {folder}: {exc}") from exc
    return sig_path


# --------------------------------------------------------------------------- verification


def read_statement(signature_path: Path) -> dict:
    """The in-toto statement inside a bundle, NOT authenticated: for display and set-up only."""
    bundle = json.loads(Path(signature_path).read_text(encoding="utf-8"))
    payload = bundle["dsseEnvelope"]["payload"]
    return json.loads(base64.b64decode(payload))


def signed_files(statement: dict) -> list[str]:
    """Distinct file paths named by a statement's resources (shards collapse to their file)."""
    names = set()
    for res in statement.get("predicate", {}).get("resources", []):
        names.add(_resource_path(res["name"], statement))
    return sorted(names)


def _resource_path(identifier: str, statement: dict | None = None) -> str:
    """A shard identifier `path:start:end` names its file; a file identifier is the path."""
    method = (statement or {}).get("predicate", {}).get("serialization", {}).get("method", "shards")
    if method == "shards":
        parts = identifier.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return parts[0]
    return identifier


def _fail(kind: VerifyKind, reason: str, files: int = 0, **diff) -> VerifyResult:
    return VerifyResult(False, reason, files, kind, **diff)


def _classify_mismatch(message: str, files: int, statement: dict | None = None) -> VerifyResult:
    """Turn model-signing's 'Signature mismatch: [...]' message into file lists."""
    import ast

    body = message.split("Signature mismatch:", 1)[1].strip()
    try:
        diffs = ast.literal_eval(body)
        if not isinstance(diffs, list):
            raise ValueError
    except (ValueError, SyntaxError):
        return _fail("mismatch", f"folder does not match its signature: {body}", files)
    modified, extra, missing = set(), set(), set()
    for d in diffs:
        d = str(d)
        if d.startswith("Hash mismatch for '"):
            ident = d[len("Hash mismatch for '") :].split("': Expected", 1)[0]
            modified.add(_resource_path(ident, statement))
        elif d.startswith(("Extra files found in model", "Missing files in model")):
            names = d.split("': ", 1)[1] if "': " in d else ""
            target = extra if d.startswith("Extra") else missing
            target.update(_resource_path(n, statement) for n in names.split(", ") if n)
        else:
            return _fail("mismatch", f"folder does not match its signature: {d}", files)
    parts = []
    for label, names in (("modified", modified), ("extra (unsigned)", extra), ("missing", missing)):
        if names:
            parts.append(f"{label}: {', '.join(sorted(names))}")
    kinds = [k for k, v in (("modified", modified), ("extra", extra), ("missing", missing)) if v]
    kind = kinds[0] if len(kinds) == 1 else "mismatch"
    return _fail(
        kind,
        "folder does not match its signature; " + "; ".join(parts),
        files,
        modified=tuple(sorted(modified)),
        extra=tuple(sorted(extra)),
        missing=tuple(sorted(missing)),
    )


def verify_folder(folder: Path, public_key: Path, signature_name: str = DEFAULT_SIGNATURE) -> VerifyResult:
    """Check folder against its signature under public_key. Never raises on a bad folder,
    key or signature: the result's `kind` and `reason` say what failed.
    """
    folder, public_key = Path(folder), Path(public_key)
    _check_signature_name(signature_name)
    sig_path = folder / signature_name
    if not folder.is_dir():
        return _fail("missing", f"not a folder: {folder}")
    if not sig_path.is_file():
        return _fail("missing_signature", f"no signature: {sig_path} does not exist")
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        return _fail("missing_key", f"cannot read public key {public_key}: {exc}")

    try:
        statement = read_statement(sig_path)
        params = statement["predicate"]["serialization"]
        files = len(signed_files(statement))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return _fail("malformed_signature", f"{sig_path.name} is not a model-signing bundle: {exc}")

    try:
        from model_signing import verifying

        (
            verifying.Config()
            .use_elliptic_key_verifier(public_key=public_key)
            .set_hashing_config(_hashing_config(signature_name, params))
            .verify(folder, sig_path)
        )
    except Exception as exc:  # the library raises ValueError, InvalidSignature, KeyError...
        msg = str(exc)
        name = type(exc).__name__
        if msg.startswith("Key mismatch"):
            return _fail(
                "wrong_key",
                f"signed by another key: the bundle's key hint does not match {public_key.name} "
                f"(fingerprint {public_key_fingerprint(public_key)[:16]}...)",
                files,
            )
        if name == "InvalidSignature":
            return _fail(
                "invalid_signature",
                "the signature does not match its payload under this key (tampered bundle or another key)",
                files,
            )
        if msg.startswith("Signature mismatch:"):
            return _classify_mismatch(msg, files, statement)
        if msg.startswith("Cannot use"):
            return _fail("unreadable", msg, files)
        if isinstance(exc, (KeyError, TypeError)) or "bundle" in msg.lower() or "payload" in msg.lower():
            return _fail("malformed_signature", f"{sig_path.name}: {name}: {msg}", files)
        return _fail("error", f"{name}: {msg}", files)

    # Authentic now: enforce lab's rule that only the signature itself is left out.
    ignored = {str(PurePosixPath(p)) for p in params.get("ignore_paths", [])}
    unexpected = sorted(ignored - _allowed_ignores(signature_name))
    if unexpected:
        return _fail("policy", f"the signature leaves files out of its coverage: {', '.join(unexpected)}", files)
    if params.get("allow_symlinks"):
        return _fail("policy", "the signature was made following symlinks", files)
    if params.get("method") == "shards":
        empty = _empty_files(folder, _allowed_ignores(signature_name))
        if empty:
            return _fail("policy", "sharded signatures do not cover empty files: " + ", ".join(empty), files)
    return VerifyResult(True, f"signature valid over {files} files", files, "ok")


def _empty_files(folder: Path, ignored: set[str]) -> list[str]:
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if any(rel == i or rel.startswith(i + "/") for i in ignored):
            continue
        if p.is_file() and p.stat().st_size == 0:
            out.append(rel)
    return sorted(out)


def require_valid(folder: Path, public_key: Path, signature_name: str = DEFAULT_SIGNATURE) -> VerifyResult:
    """verify_folder, raising SignatureError (carrying the result) unless it passes."""
    result = verify_folder(folder, public_key, signature_name)
    if not result.ok:
        raise SignatureError(f"{folder}: {result.reason}", result)
    return result
