"""`lab sample` on the shared run, as a product team types it: a released WAV with a trusted content
credential and a registry row; a refused request writes nothing but its refusal record."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from jobs_helpers import python

from lab.cards import load_card
from lab.registry import Registry
from lab.sample.credentials import verify_output


def _sample(demo, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python(), "-m", "lab", "sample", *args, f"registry_url=sqlite:///{tmp_path / 'registry.sqlite'}"],
        cwd=tmp_path,
        env=demo.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_lab_sample_releases_a_signed_wav_and_records_it(demo, shared_run, tmp_path):
    out_dir = tmp_path / "out"
    run = _sample(
        demo,
        tmp_path,
        f"checkpoint={shared_run.last}",
        "prompt='warm piano, slow'",  # Hydra: a comma needs quotes
        "use=[ai_inference,commercial_output]",
        "territory=GB",
        "duration=4",
        "seed=3",
        f"out={out_dir}",
        "json=true",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["allowed"] and doc["refusals"] == [] and doc["withheld"] == [], doc
    (released,) = doc["released"]
    wav = Path(released["path"])
    assert wav.parent == out_dir and wav.suffix == ".wav" and released["prompt"] == "warm piano, slow"
    check = verify_output(wav, home=demo.home)
    assert check.state == "trusted", check.detail
    assert check.claims["checkpoint_id"] == load_card(shared_run.last).card.identity.checkpoint_id
    assert check.claims["uses"] == ["ai_inference", "commercial_output"] and check.claims["territory"] == "GB"
    assert check.claims["decision"]["allowed"] and check.claims["credits"]
    sha = hashlib.sha256(wav.read_bytes()).hexdigest()
    with Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}") as registry:
        (row,) = registry.outputs()
    assert (row["kind"], row["record_id"], row["audio_sha256"], row["path"]) == ("released", sha, sha, str(wav))
    assert row["checkpoint_id"] == check.claims["checkpoint_id"] and row["credential"] == "c2pa"
    assert Path(row["sidecar"]).is_file() and row["token_score"] is not None


@pytest.mark.slow
def test_lab_sample_refusal_writes_only_a_refusal_record(demo, shared_run, tmp_path):
    out_dir = tmp_path / "out"
    run = _sample(demo, tmp_path, f"checkpoint={shared_run.last}", "prompt=x", "use=[eval_only]", f"out={out_dir}")
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-3000:]
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("refused [consent] recording ")]
    assert lines and all("purpose_not_granted" in ln and "(grant G-" in ln for ln in lines)
    files = sorted(p.relative_to(out_dir).parts[0] for p in out_dir.rglob("*") if p.is_file())
    assert files == ["refusals"]  # no audio, no sidecar: the refusal record alone
    record = json.loads(next(out_dir.glob("refusals/*.json")).read_text())
    assert record["kind"] == "refused" and not record["decision"]["allowed"]
    with Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}") as registry:
        (row,) = registry.outputs()
    assert (row["kind"], row["record_id"]) == ("refused", record["record_id"])


@pytest.mark.slow
def test_an_output_over_the_replication_threshold_is_withheld_without_audio(demo, shared_run, tmp_path, monkeypatch):
    """In-process, the real check with thresholds below any score: the output is withheld, no audio is
    written, and the record names the nearest recording."""
    import functools

    from lab.cli.demo import compose
    from lab.recipes.sample import SampleRecipe
    from lab.sample import replication

    real = replication.check_replication
    monkeypatch.setattr(
        replication, "check_replication", functools.partial(real, thresholds={"tokens": -1.0, "audio": -1.0})
    )
    out_dir, url = tmp_path / "out", f"sqlite:///{tmp_path / 'registry.sqlite'}"
    cfg = compose(
        "sample",
        [
            *demo.overrides(),
            f"checkpoint={shared_run.last}",
            "prompt=warm piano",
            "duration=10",  # long enough to fingerprint: the audio check names a recording
            "progress=false",
            f"out={out_dir}",
            f"registry_url={url}",
        ],
    )
    summary = SampleRecipe(cfg).run()
    assert summary.allowed and summary.released == [], summary.released
    (w,) = summary.withheld
    assert w["nearest"] and w["nearest"].startswith("demo-") and w["detail"].startswith("withheld: ")
    assert [p.parent.name for p in out_dir.rglob("*") if p.is_file()] == ["withheld"]  # a record, no audio
    record = json.loads(Path(w["record"]).read_text())
    assert record["kind"] == "withheld" and record["path"] is None and record["replication"]["withheld"]
    with Registry(url) as registry:
        (row,) = registry.outputs()
    assert (row["kind"], row["nearest_recording"], row["record_id"]) == ("withheld", w["nearest"], record["record_id"])
