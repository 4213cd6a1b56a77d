"""lab's small certificate authority for content credentials: root → intermediate → signer, offline.

The C2PA SDK will not sign with a self-signed certificate, wants an extended key usage on the signer
(emailProtection is accepted; anyExtendedKeyUsage is refused) and Authority/Subject Key Identifiers
on every certificate, so a one-certificate setup like the checkpoint signing key is not enough. A
reader trusts an output when it chains to the root given as its trust anchor; reviewers get
`root.pem` (public) and nothing else. Everything lives under `LAB_HOME/keys/c2pa/`: private keys
0600, written atomically, never printed or logged.

A missing or expired link is re-issued from the link above it (the root stays, so every output signed
under it still verifies); a missing root starts a new CA, which a reader holding the old root will
call untrusted, as it should.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.util import atomic
from lab.util.locks import file_lock

CA_DIRNAME = "c2pa"
ORGANIZATION = "lab (local content-credentials CA)"
# Lifetimes: outputs carry no trusted timestamp (signing is offline), so a reader checks the chain
# against today; a signer valid for years keeps old outputs verifiable. Renewed RENEW_BEFORE ahead.
ROOT_DAYS, INTERMEDIATE_DAYS, SIGNER_DAYS = 20 * 365, 10 * 365, 5 * 365
RENEW_BEFORE = dt.timedelta(days=30)


class CAError(Exception):
    """The CA folder holds something lab cannot use (a key of the wrong kind, a chain that does not link)."""


@dataclass(frozen=True)
class CAPaths:
    """Files of the local CA. Only `root_cert` is for others; `chain` is signer + intermediate (PEM)."""

    folder: Path
    root_cert: Path
    root_key: Path
    intermediate_cert: Path
    intermediate_key: Path
    signer_cert: Path
    signer_key: Path
    chain: Path

    @classmethod
    def under(cls, folder: Path) -> CAPaths:
        return cls(
            folder=folder,
            root_cert=folder / "root.pem",
            root_key=folder / "root.key.pem",
            intermediate_cert=folder / "intermediate.pem",
            intermediate_key=folder / "intermediate.key.pem",
            signer_cert=folder / "signer.pem",
            signer_key=folder / "signer.key.pem",
            chain=folder / "signer-chain.pem",
        )


def ca_folder(home: Path) -> Path:
    return Path(home) / "keys" / CA_DIRNAME


def ca_paths(home: Path) -> CAPaths:
    """Where the CA of `home` lives (nothing is created)."""
    return CAPaths.under(ca_folder(home))


def ensure_ca(home: Path, *, now: dt.datetime | None = None) -> CAPaths:
    """Return the CA under `home`/keys/c2pa, creating or renewing whatever link is missing or expiring.

    Safe to call from several processes at once (a file lock), and cheap when all is in place.
    """
    paths = ca_paths(home)
    paths.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = now or dt.datetime.now(dt.UTC)
    with file_lock(paths.folder / ".ca.lock"):
        root_key, root, issued = _link(paths.root_key, paths.root_cert, None, now, _root_cert)
        inter_key, inter, issued = _link(
            paths.intermediate_key, paths.intermediate_cert, (root_key, root), now, _intermediate_cert, issued
        )
        _, signer, _ = _link(paths.signer_key, paths.signer_cert, (inter_key, inter), now, _signer_cert, issued)
        chain = _pem(signer) + _pem(inter)
        if not paths.chain.exists() or paths.chain.read_bytes() != chain:
            atomic.write_bytes(paths.chain, chain)
    return paths


def root_fingerprint(root_cert: Path) -> str:
    """sha256 (hex) of the root certificate's DER: what a reviewer compares out of band."""
    cert = x509.load_pem_x509_certificate(Path(root_cert).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


# --------------------------------------------------------------------------- internals


def _link(key_path: Path, cert_path: Path, issuer, now: dt.datetime, make, force: bool = False):
    """Load one link of the chain, or (re)issue it when absent, expiring, not from `issuer`, or `force`d
    (its issuer was just re-issued). Returns (key, certificate, whether it was issued now)."""
    key = _load_or_make_key(key_path)
    cert = None
    if cert_path.exists() and not force:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - RENEW_BEFORE < now or cert.public_key() != key.public_key():
            cert = None
        elif issuer is not None and not _issued_by(cert, issuer[1]):
            cert = None
    if cert is None:
        cert = make(key, issuer, now)
        atomic.write_bytes(cert_path, _pem(cert))
        return key, cert, True
    return key, cert, False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):  # e.g. a chain left from an older root
        return False
    return True


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise CAError(f"{path} is not an EC P-256 private key")
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic.write_bytes(path, pem, mode=0o600)
    return key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(key, subject: x509.Name, issuer_name: x509.Name, issuer_key, now: dt.datetime, days: int):
    start = now - dt.timedelta(minutes=5)  # a little slack for clocks that disagree
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _root_cert(key, _issuer, now: dt.datetime) -> x509.Certificate:
    name = _name("lab content credentials root")
    return (
        _builder(key, name, name, key, now, ROOT_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )


def _intermediate_cert(key, issuer, now: dt.datetime) -> x509.Certificate:
    root_key, root = issuer
    return (
        _builder(key, _name("lab content credentials intermediate"), root.subject, root_key, now, INTERMEDIATE_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def _signer_cert(key, issuer, now: dt.datetime) -> x509.Certificate:
    inter_key, inter = issuer
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        _builder(key, _name("lab content credentials signer"), inter.subject, inter_key, now, SIGNER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        # emailProtection: the EKU the C2PA SDK accepts for a signer (documentSigning fails its
        # verify-after-sign here; anyExtendedKeyUsage is refused outright).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
