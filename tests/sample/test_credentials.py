"""Content credentials on released outputs: trusted as signed; a changed byte, a stripped chunk and a
foreign CA each read as what they are; the sidecar says what the manifest says; no key leaks."""

from __future__ import annotations

import datetime as dt
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lab.sample import credentials as cred
from lab.sample.ca import ensure_ca
from lab.sample.records import GateDecision, OutputRecord, ReplicationResult

SR = 32_000


def _record(**over) -> OutputRecord:
    at = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    decision = GateDecision(
        allowed=True,
        checkpoint_id="ckpt-7f3a",
        checkpoint_folder="/runs/demo/checkpoints/step-000020",
        data_card_sha256="ab" * 32,
        uses=["ai_inference", "commercial_output"],
        territory="GB",
        at=at,
        ledger_head_seq=41,
        ledger_head_hash="cd" * 32,
        checks={"signature": "ok", "card": "ok", "registry": "ok", "consent": "ok", "licence": "ok"},
    )
    replication = ReplicationResult(
        token_score=0.125,
        audio_score=0.0,
        nearest_recording="rec-0003",
        nearest_by="tokens",
        withheld=False,
        thresholds={"tokens": 0.5, "audio": 0.35},
        detail="below both thresholds",
    )
    fields = dict(
        record_id="pending",
        kind="released",
        created_at=at,
        checkpoint_id="ckpt-7f3a",
        checkpoint_folder=decision.checkpoint_folder,
        data_card_sha256=decision.data_card_sha256,
        prompt="a calm piano — in D minor",
        seed=7,
        duration_s=1.0,
        uses=decision.uses,
        territory="GB",
        decision=decision,
        replication=replication,
        sample_rate=SR,
        format="wav",
        credits=["Song One — Ann Artist (CC-BY-4.0)", "Song Two — Bo Band"],
    )
    fields.update(over)
    return OutputRecord(**fields)


def _audio(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype("float32"), SR, subtype="PCM_16")
    return path


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """RIFF chunks as (id, offset of the header, payload size)."""
    out, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        out.append((cid, pos, size))
        pos += 8 + size + (size & 1)
    return out


@pytest.fixture
def signed(tmp_path):
    home = tmp_path / "home"
    src = _audio(tmp_path / "raw.wav")
    dst = tmp_path / "out" / "take-1.wav"
    record = _record()
    sidecar = cred.sign_output(src, dst, record, home=home)
    return home, dst, sidecar, record


def test_signed_output_is_trusted_with_the_lab_claims(signed):
    home, dst, sidecar, record = signed
    check = cred.verify_output(dst, home=home)
    assert check.state == "trusted", check.detail
    assert check.claims == cred.output_claims(record)
    assert check.claims["decision"]["allowed"] is True
    assert check.claims["ledger_head"] == {"seq": 41, "hash": "cd" * 32}
    assert check.claims["replication"]["token_score"] == 0.125
    assert check.claims["credits"] == record.credits
    assert sidecar == cred.sidecar_path(dst) and sidecar.name == "take-1.wav.c2pa.json"
    # still a playable WAV with the same samples
    assert np.array_equal(sf.read(dst, dtype="int16")[0], sf.read(dst.parent.parent / "raw.wav", dtype="int16")[0])


def test_manifest_carries_the_c2pa_and_cawg_assertions(signed):
    import c2pa

    _, dst, _, record = signed
    with open(dst, "rb") as f, c2pa.Reader("audio/wav", f) as reader:
        manifest = reader.get_active_manifest()
    by_label = {a["label"]: a["data"] for a in manifest["assertions"]}
    actions = next(v for k, v in by_label.items() if k.startswith("c2pa.actions"))["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    entries = by_label["cawg.training-mining"]["entries"]
    assert set(entries) == {"cawg.ai_training", "cawg.ai_generative_training", "cawg.ai_inference", "cawg.data_mining"}
    assert {e["use"] for e in entries.values()} == {"notAllowed"}
    (ingredient,) = manifest["ingredients"]
    assert ingredient["title"] == record.checkpoint_id
    assert ingredient["relationship"] == "inputTo"
    assert ingredient["metadata"]["org.lab.data_card_sha256"] == record.data_card_sha256


def test_sidecar_equals_the_embedded_claims(signed):
    home, dst, sidecar, _ = signed
    side = json.loads(sidecar.read_text())
    check = cred.verify_output(dst, home=home)
    assert side["claims"] == check.claims
    assert side["manifest_label"] == check.manifest_label and side["manifest_label"].startswith("urn:c2pa:")
    assert side["file"] == dst.name


def test_one_changed_sample_byte_reads_tampered(signed):
    home, dst, _, _ = signed
    data = bytearray(dst.read_bytes())
    (_, at, size), *_ = [c for c in _chunks(bytes(data)) if c[0] == b"data"]
    data[at + 8 + size // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    check = cred.verify_output(dst, home=home)
    assert check.state == "tampered", check.detail
    assert "dataHash" in check.detail


def test_an_edited_claim_reads_tampered(signed):
    home, dst, _, _ = signed
    data = dst.read_bytes()
    assert data.count(b"calm piano") == 1
    dst.write_bytes(data.replace(b"calm piano", b"loud piano"))
    check = cred.verify_output(dst, home=home)
    assert check.state == "tampered", check.detail
    assert cred.LAB_ASSERTION in check.detail


def test_stripped_c2pa_chunk_reads_missing(signed):
    home, dst, _, _ = signed
    data = dst.read_bytes()
    (c2pa_chunk,) = [c for c in _chunks(data) if c[0] == b"C2PA"]
    _, at, size = c2pa_chunk
    kept = data[:at] + data[at + 8 + size + (size & 1) :]
    kept = kept[:4] + struct.pack("<I", len(kept) - 8) + kept[8:]  # the RIFF size, as a stripping tool fixes it
    dst.write_bytes(kept)
    check = cred.verify_output(dst, home=home)
    assert check.state == "missing", check.detail
    assert sf.read(dst)[0].shape == (SR,)  # the audio itself survived the stripping


def test_plain_wav_reads_missing(tmp_path):
    ensure_ca(tmp_path / "home")
    check = cred.verify_output(_audio(tmp_path / "plain.wav"), home=tmp_path / "home")
    assert check.state == "missing" and check.claims is None


def test_credential_from_another_ca_reads_untrusted(tmp_path, signed):
    home, dst, _, _ = signed
    other_home = tmp_path / "other"
    forged = cred.sign_output(_audio(tmp_path / "r2.wav"), tmp_path / "forged.wav", _record(), home=other_home)
    assert forged.exists()
    check = cred.verify_output(tmp_path / "forged.wav", home=home)
    assert check.state == "untrusted", check.detail
    assert "signingCredential.untrusted" in check.detail
    # ... and trusted by its own root: the state depends on the anchor, not on the file
    assert cred.verify_output(tmp_path / "forged.wav", home=other_home).state == "trusted"


def test_flac_is_signed_and_trusted(tmp_path):
    src = tmp_path / "raw.flac"
    sf.write(src, np.zeros(SR // 2, dtype="float32"), SR)
    cred.sign_output(src, tmp_path / "out.flac", _record(format="flac"), home=tmp_path)
    assert cred.verify_output(tmp_path / "out.flac", home=tmp_path).state == "trusted"


def test_no_private_key_material_in_output_sidecar_or_manifest(signed):
    from cryptography.hazmat.primitives import serialization

    home, dst, sidecar, _ = signed
    ca = ensure_ca(home)
    outputs = dst.read_bytes() + sidecar.read_bytes()
    for key_file in (ca.root_key, ca.intermediate_key, ca.signer_key):
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert scalar not in outputs and der not in outputs
        body = b"".join(key_file.read_bytes().splitlines()[1:-1])
        assert body not in outputs
    assert b"PRIVATE KEY" not in outputs


def test_only_released_wav_or_flac_is_signed(tmp_path):
    src = _audio(tmp_path / "raw.wav")
    with pytest.raises(cred.CredentialError, match="released"):
        cred.sign_output(src, tmp_path / "o.wav", _record(kind="withheld"), home=tmp_path)
    with pytest.raises(cred.CredentialError, match=r"\.wav or \.flac"):
        cred.sign_output(src, tmp_path / "o.mp3", _record(), home=tmp_path)
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "o.wav.c2pa.json").exists()


def test_numeric_lists_are_refused_before_signing(tmp_path):
    # c2pa-rs turns a JSON array of numbers into a byte string: a claim like that would not read back.
    with pytest.raises(cred.CredentialError, match="list of numbers"):
        cred._check_encodable({"a": {"b": [0.5, 1.0]}}, "x")
    cred._check_encodable({"a": ["x", {"n": 1}], "b": [True]}, "x")


def _lab(*args: str, home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "LAB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_exit_codes_and_json(tmp_path, signed):
    home, dst, _, _ = signed
    ok = _lab("verify-output", str(dst), "--json", home=home)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["state"] == "trusted"

    plain = _lab("verify-output", str(_audio(tmp_path / "plain.wav")), home=home)
    assert plain.returncode == 1 and "missing" in plain.stdout + plain.stderr

    gone = _lab("verify-output", str(tmp_path / "nope.wav"), home=home)
    assert gone.returncode == 2 and "nope.wav" in gone.stderr

    root = _lab("verify-output", "--root", home=home)
    assert root.returncode == 0 and str(ensure_ca(home).root_cert) in root.stdout
