"""Signing a checkpoint folder and every way verification must fail."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from lab.cards.signing import (
    SignatureError,
    ensure_keypair,
    public_key_fingerprint,
    read_statement,
    require_valid,
    sign_folder,
    verify_folder,
)


@pytest.fixture
def folder(tmp_path):
    ck = tmp_path / "step-000200"
    (ck / "tokenizer").mkdir(parents=True)
    (ck / "training_state").mkdir()
    (ck / "model.safetensors").write_bytes(os.urandom(300_000))
    (ck / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    (ck / "data_card.json").write_text(json.dumps({"schema": "lab.data_card/1"}))
    (ck / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# card\n")
    (ck / "tokenizer" / "spiece.model").write_bytes(b"\x00tok")
    (ck / "training_state" / "exposure.json").write_text("{}")
    (ck / "training_state" / "empty.flag").write_bytes(b"")
    return ck


@pytest.fixture
def signed(folder, keys):
    sign_folder(folder, keys[0].private_path)
    return folder


def _flip(path, offset=0):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_keypair_created_private_and_reused(tmp_path):
    kp = ensure_keypair(tmp_path / "keys")
    assert stat.S_IMODE(kp.private_path.stat().st_mode) == 0o600
    assert kp.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert len(kp.fingerprint) == 64 and kp.fingerprint == public_key_fingerprint(kp.public_path)
    before = kp.private_path.read_bytes()
    again = ensure_keypair(tmp_path / "keys")
    assert again == kp and again.private_path.read_bytes() == before
    # a lost public key is rebuilt from the private key, not a new pair
    kp.public_path.unlink()
    assert ensure_keypair(tmp_path / "keys").fingerprint == kp.fingerprint


def test_sign_then_verify_ok(signed, keys):
    sig = signed / "model.sig"
    assert sig.is_file()
    res = verify_folder(signed, keys[0].public_path)
    assert res.ok and res.kind == "ok" and bool(res)
    assert res.files == 7  # every file, recursively, the empty one included; not the signature
    assert require_valid(signed, keys[0].public_path).ok
    stmt = read_statement(sig)
    assert stmt["predicate"]["serialization"]["hash_type"] == "sha256"
    assert not list(signed.parent.glob("*.tmp"))


def test_manifest_digests_match_plain_sha256(signed):
    import hashlib

    stmt = read_statement(signed / "model.sig")
    digests = {r["name"]: r["digest"] for r in stmt["predicate"]["resources"]}
    assert digests["model.safetensors"] == hashlib.sha256((signed / "model.safetensors").read_bytes()).hexdigest()


def test_resigning_replaces_the_signature(signed, keys):
    (signed / "config.json").write_text("{}")
    assert not verify_folder(signed, keys[0].public_path).ok
    sign_folder(signed, keys[0].private_path)
    assert verify_folder(signed, keys[0].public_path).ok


def test_one_byte_in_weights_fails_naming_the_file(signed, keys):
    _flip(signed / "model.safetensors", 1234)
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "modified"
    assert res.modified == ("model.safetensors",)
    assert "model.safetensors" in res.reason
    with pytest.raises(SignatureError, match="model.safetensors") as exc:
        require_valid(signed, keys[0].public_path)
    assert exc.value.result.kind == "modified"


def test_one_byte_in_data_card_fails(signed, keys):
    _flip(signed / "data_card.json", 3)
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.modified == ("data_card.json",)


def test_added_file_fails(signed, keys):
    (signed / "tokenizer" / "added.json").write_text("{}")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "extra" and res.extra == ("tokenizer/added.json",)


def test_added_empty_file_fails(signed, keys):
    (signed / "new_marker").write_bytes(b"")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and "new_marker" in res.extra


@pytest.mark.parametrize("victim", ["config.json", "training_state/empty.flag"])
def test_removed_file_fails(signed, keys, victim):
    (signed / victim).unlink()
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "missing" and res.missing == (victim,)


def test_other_key_fails(signed, keys):
    res = verify_folder(signed, keys[1].public_path)
    assert not res.ok and res.kind == "wrong_key"


def test_forged_bundle_with_hint_stripped_fails(signed, keys, capsys):
    """Someone re-signs with their own key and removes the key hint: the signature check catches it."""
    other = signed.parent / "other"
    shutil.copytree(signed, other)
    _flip(other / "model.safetensors")
    sign_folder(other, keys[1].private_path)
    bundle = json.loads((other / "model.sig").read_text())
    bundle["verificationMaterial"]["publicKey"]["hint"] = None
    (signed / "model.sig").write_text(json.dumps(bundle))
    _flip(signed / "model.safetensors")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "invalid_signature"


def test_missing_and_malformed_signature(signed, keys):
    (signed / "model.sig").unlink()
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "missing_signature"
    (signed / "model.sig").write_text("not json")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "malformed_signature"


def test_missing_public_key(signed, tmp_path):
    res = verify_folder(signed, tmp_path / "nope.pem")
    assert not res.ok and res.kind == "missing_key"


def test_symlink_refused(signed, keys, folder):
    (signed / "link").symlink_to(signed / "config.json")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "unreadable"
    with pytest.raises(SignatureError):
        sign_folder(signed, keys[0].private_path)


@pytest.mark.parametrize("added", [".cache/huggingface/x.metadata", ".cache/other.json", ".git/HEAD", ".gitattributes"])
def test_nothing_is_left_out_by_name(signed, keys, added):
    """Copy-tool metadata is an unsigned file like any other: nothing under the folder escapes the signature."""
    (signed / added).parent.mkdir(parents=True, exist_ok=True)
    (signed / added).write_text("ref: refs/heads/main")
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "extra" and res.extra == (added,)


def test_dot_folders_and_complete_marker_are_signed(folder, keys):
    """Present at signing, they are in the manifest: a later change to any of them is caught."""
    (folder / ".cache").mkdir()
    (folder / ".cache" / "note.txt").write_text("a")
    (folder / "COMPLETE").write_text("step 200")
    sign_folder(folder, keys[0].private_path)
    names = {r["name"] for r in read_statement(folder / "model.sig")["predicate"]["resources"]}
    assert {".cache/note.txt", "COMPLETE"} <= names and "model.sig" not in names
    (folder / "COMPLETE").write_text("step 201")
    res = verify_folder(folder, keys[0].public_path)
    assert not res.ok and res.modified == ("COMPLETE",)


def test_custom_signature_name(folder, keys):
    sign_folder(folder, keys[0].private_path, signature_name="lab.sig")
    assert verify_folder(folder, keys[0].public_path, signature_name="lab.sig").ok
    # the other name is then an unsigned, extra file
    assert verify_folder(folder, keys[0].public_path).kind == "missing_signature"


def test_signature_that_leaves_files_out_is_refused(signed, keys):
    """Validly signed by our key, but made (by another tool) to skip training_state/: lab refuses it."""
    from model_signing import hashing, signing

    cfg = (
        hashing.Config()
        .use_file_serialization()
        .set_ignored_paths(paths=["model.sig", "training_state"], ignore_git_paths=False)
    )
    signing.Config().use_elliptic_key_signer(private_key=keys[0].private_path).set_hashing_config(cfg).sign(
        signed, signed / "model.sig"
    )
    res = verify_folder(signed, keys[0].public_path)
    assert not res.ok and res.kind == "policy" and "training_state" in res.reason


def _fingerprint_in_child(key_dir, queue):
    queue.put(ensure_keypair(key_dir).fingerprint)


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    """DDP ranks may all call ensure_keypair on a fresh key dir at once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fingerprint_in_child, args=(tmp_path / "keys", queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    prints = {queue.get(timeout=5) for _ in procs}
    assert len(prints) == 1 and prints == {ensure_keypair(tmp_path / "keys").fingerprint}
