"""The local content-credentials CA: a chain the C2PA SDK accepts, private keys kept private, renewal."""

from __future__ import annotations

import datetime as dt
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from lab.sample.ca import ca_paths, ensure_ca, root_fingerprint


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_chain_root_intermediate_signer(tmp_path):
    ca = ensure_ca(tmp_path)
    assert ca.folder == tmp_path / "keys" / "c2pa"
    root, inter, signer = _cert(ca.root_cert), _cert(ca.intermediate_cert), _cert(ca.signer_cert)

    root.verify_directly_issued_by(root)  # the root is self-signed, and the only one
    inter.verify_directly_issued_by(root)
    signer.verify_directly_issued_by(inter)
    assert signer.subject != signer.issuer

    for cert, is_ca in ((root, True), (inter, True), (signer, False)):
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is is_ca
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert ski.digest and aki.key_identifier
    assert (
        signer.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        == inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    eku = list(signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.EMAIL_PROTECTION]  # never anyExtendedKeyUsage

    chain = x509.load_pem_x509_certificates(ca.chain.read_bytes())
    assert [c.subject for c in chain] == [signer.subject, inter.subject]  # signer first, no root


def test_private_keys_are_0600_and_the_rest_is_public(tmp_path):
    ca = ensure_ca(tmp_path)
    for key in (ca.root_key, ca.intermediate_key, ca.signer_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    for public in (ca.root_cert, ca.intermediate_cert, ca.signer_cert, ca.chain):
        assert b"PRIVATE" not in public.read_bytes()
    assert stat.S_IMODE(ca.folder.stat().st_mode) & 0o077 == 0


def test_second_call_reuses_and_a_loose_key_is_tightened(tmp_path):
    first = ensure_ca(tmp_path)
    before = {p: p.read_bytes() for p in (first.root_cert, first.signer_cert, first.signer_key)}
    first.signer_key.chmod(0o644)
    again = ensure_ca(tmp_path)
    assert {p: p.read_bytes() for p in before} == before
    assert stat.S_IMODE(again.signer_key.stat().st_mode) == 0o600
    assert root_fingerprint(again.root_cert) == _cert(again.root_cert).fingerprint(hashes.SHA256()).hex()


def test_lost_signer_is_reissued_under_the_same_root(tmp_path):
    ca = ensure_ca(tmp_path)
    root = ca.root_cert.read_bytes()
    old_signer = ca.signer_cert.read_bytes()
    ca.signer_cert.unlink()
    ca.signer_key.unlink()
    again = ensure_ca(tmp_path)
    assert again.root_cert.read_bytes() == root
    assert again.signer_cert.read_bytes() != old_signer
    _cert(again.signer_cert).verify_directly_issued_by(_cert(again.intermediate_cert))


def test_expiring_signer_is_renewed(tmp_path):
    ca = ensure_ca(tmp_path)
    expires = _cert(ca.signer_cert).not_valid_after_utc
    later = ensure_ca(tmp_path, now=expires - dt.timedelta(days=1))
    assert _cert(later.signer_cert).not_valid_after_utc > expires
    assert ca_paths(tmp_path) == later


def test_two_homes_are_two_cas(tmp_path):
    a, b = ensure_ca(tmp_path / "a"), ensure_ca(tmp_path / "b")
    assert root_fingerprint(a.root_cert) != root_fingerprint(b.root_cert)
