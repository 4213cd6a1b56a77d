"""Outputs in the registry: recorded once per record id, listed per checkpoint and kind, rebuilt from records."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import text
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output_helpers import output_record  # noqa: E402

import lab.cli  # noqa: E402
from lab.registry import Registry, rebuild  # noqa: E402
from lab.registry.rebuild import rebuild_outputs  # noqa: E402


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'r.sqlite'}"


@pytest.fixture
def reg(url):
    with Registry(url) as r:
        yield r


def test_record_output_is_idempotent_on_record_id(reg):
    rec = output_record("ck1", "released")
    reg.record_output(rec)
    reg.record_output(rec)
    rows = reg.outputs()
    assert len(rows) == 1 and rows[0]["record_id"] == rec.record_id
    moved = rec.model_copy(update={"path": "/elsewhere/0.wav"})
    reg.record_output(moved)  # the same attempt recorded again replaces its row
    assert [r["path"] for r in reg.outputs()] == ["/elsewhere/0.wav"]


def test_row_holds_the_record(reg):
    rec = output_record("ck1", "refused", n=3)
    reg.record_output(rec)
    (row,) = reg.outputs()
    assert row["kind"] == "refused" and row["allowed"] is False and row["territory"] == "GB"
    assert row["uses"] == ["ai_inference", "commercial_output"]
    assert row["refusals"][0]["grant_id"] == "G1" and row["refusals"][0]["recording_id"] == "r1"
    assert row["ledger_head_seq"] == 7 and row["token_score"] is None and row["path"] is None
    assert row["record"] == rec.model_dump(mode="json")
    withheld = output_record("ck1", "withheld", n=4)
    reg.record_output(withheld)
    row = reg.outputs(kind="withheld")[0]
    assert (row["token_score"], row["audio_score"], row["nearest_recording"]) == (0.9, 0.2, "demo:r1")


def test_outputs_per_checkpoint_kind_and_limit(reg):
    for n, (cid, kind) in enumerate(
        [("a", "released"), ("a", "withheld"), ("b", "released"), ("b", "refused"), ("c", "released")]
    ):
        reg.record_output(output_record(cid, kind, n=n))
    assert [r["checkpoint_id"] for r in reg.outputs()] == ["c", "b", "b", "a", "a"]  # newest first
    assert {(r["checkpoint_id"], r["kind"]) for r in reg.outputs(["a", "c"])} == {
        ("a", "released"),
        ("a", "withheld"),
        ("c", "released"),
    }
    assert [r["checkpoint_id"] for r in reg.outputs(kind="released")] == ["c", "b", "a"]
    assert [r["checkpoint_id"] for r in reg.outputs(["a", "b"], kind="released", limit=1)] == ["b"]
    assert len(reg.outputs(limit=2)) == 2 and reg.outputs(["zzz"]) == []
    light = reg.outputs(["b"], with_record=False)
    assert [r["kind"] for r in light] == ["refused", "released"] and "record" not in light[0]
    assert light[0]["refusals"][0]["reason"] == "revoked"


def test_registry_without_outputs_table_gains_it(url, tmp_path):
    with Registry(url) as old:
        old.record_output(output_record("a"))
        with old.engine.begin() as conn:
            conn.execute(text("DROP TABLE registry_outputs"))
    with Registry(url) as again:  # a registry made before outputs were recorded
        assert again.outputs() == []
        again.record_output(output_record("a", "refused", n=1))
        assert [r["kind"] for r in again.outputs()] == ["refused"]
    assert Registry(f"sqlite:///{tmp_path / 'none.sqlite'}").outputs() == []
    assert not (tmp_path / "none.sqlite").exists()  # reading creates nothing


def test_outputs_list_cli(url, reg):
    reg.record_output(output_record("ck1", "released", n=1, path="/out/ck1/take-1.wav"))
    reg.record_output(output_record("ck1", "refused", n=2))
    reg.record_output(output_record("ck2", "withheld", n=3))
    lab.cli._register()  # each command module adds itself to lab.cli.app on first import
    runner = CliRunner()
    wide = {"COLUMNS": "250"}
    res = runner.invoke(lab.cli.app, ["outputs", "list", "--registry", url, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["outputs"]
    assert [o["kind"] for o in got] == ["withheld", "refused", "released"]
    res = runner.invoke(lab.cli.app, ["outputs", "list", "--registry", url, "--checkpoint", "ck1"], env=wide)
    assert res.exit_code == 0, res.output
    assert "take-1.wav" in res.output and "revoked (r1/G1)" in res.output and "ck2" not in res.output
    res = runner.invoke(lab.cli.app, ["outputs", "list", "--registry", url, "--kind", "withheld"], env=wide)
    assert "nearest demo:r1" in res.output and "ck1" not in res.output
    res = runner.invoke(lab.cli.app, ["outputs", "list", "--registry", url, "--kind", "lost"])
    assert res.exit_code == 2


# --------------------------------------------------------------------------- rebuild


def _signed_output(home: Path, folder: Path, n: int):
    """A released WAV signed by the CA under `home`, and the record it was signed for."""
    from lab.sample.credentials import sign_output

    sr = 16_000
    raw = folder / f".raw-{n}.wav"
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(raw, (0.2 * np.sin(np.arange(sr) * 0.05 * (n + 1))).astype(np.float32), sr, subtype="PCM_16")
    dst = folder / f"take-{n}.wav"
    rec = output_record("ck1", "released", n=n, path=str(dst))
    sidecar = sign_output(raw, dst, rec, home=home)
    raw.unlink()
    return dst, sidecar, rec


def test_rebuild_restores_outputs_from_records(tmp_path, reg):
    home = tmp_path / "home"
    out = tmp_path / "experiments" / "outputs" / "ck1"
    wav, sidecar, rec = _signed_output(home, out, 0)
    tampered, _, _ = _signed_output(home, out, 1)
    data = bytearray(tampered.read_bytes())
    data[data.index(b"data") + 1000] ^= 0xFF  # one changed sample byte
    tampered.write_bytes(bytes(data))
    refusal = output_record("ck1", "refused", n=5)
    withheld = output_record("ck2", "withheld", n=6)
    (out / "refusals").mkdir()
    (out / "refusals" / "r.json").write_text(refusal.model_dump_json())
    (out / "withheld.json").write_text(withheld.model_dump_json())
    (out / "notes.json").write_text(json.dumps({"not": "a record"}))
    (out / "broken.json").write_text(json.dumps({"record_id": "x", "kind": "refused", "decision": {}}))
    reg.record_output(output_record("gone", "released", n=9))  # not in any record any more

    report = rebuild(reg, [tmp_path / "experiments"], tmp_path / "no-key.pem", home=home)

    digest = hashlib.sha256(wav.read_bytes()).hexdigest()
    assert sorted(report.outputs) == sorted([digest, refusal.record_id, withheld.record_id])
    rows = {r["record_id"]: r for r in reg.outputs()}
    assert set(rows) == set(report.outputs)
    assert rows[refusal.record_id]["record"] == refusal.model_dump(mode="json")
    assert rows[withheld.record_id]["record"] == withheld.model_dump(mode="json")
    back = rows[digest]["record"]  # from the claims embedded in the signed file, not from the sidecar
    assert back["audio_sha256"] == digest and back["path"] == str(wav.resolve())
    assert back["sidecar"] == str(sidecar.resolve()) and back["credential"] == "c2pa" and back["format"] == "wav"
    same = ("kind", "checkpoint_id", "prompt", "seed", "uses", "territory", "decision", "replication", "credits")
    assert {k: back[k] for k in same} == {k: rec.model_dump(mode="json")[k] for k in same}
    skipped = dict(report.skipped)
    assert "tampered" in skipped[str((out / "take-1.wav.c2pa.json").resolve())]
    assert "not a valid output record" in skipped[str((out / "broken.json").resolve())]
    assert str((out / "notes.json").resolve()) not in skipped


def test_rebuild_outputs_trusts_the_file_not_the_sidecar(tmp_path, reg):
    home = tmp_path / "home"
    wav, sidecar, _ = _signed_output(home, tmp_path / "out", 0)
    side = json.loads(sidecar.read_text())
    side["claims"]["territory"] = "US"  # an edited sidecar changes nothing
    sidecar.write_text(json.dumps(side))
    (tmp_path / "out" / "lonely.wav.c2pa.json").write_text("{}")
    ids, skipped = rebuild_outputs(reg, [tmp_path / "out"], home=home)
    assert reg.outputs()[0]["territory"] == "GB" and len(ids) == 1
    assert "missing" in dict(skipped)[str((tmp_path / "out" / "lonely.wav.c2pa.json").resolve())]
    other = tmp_path / "other-home"  # a different lab's root does not vouch for this file
    ids, skipped = rebuild_outputs(reg, [tmp_path / "out"], home=other)
    assert ids == [] and reg.outputs() == []
