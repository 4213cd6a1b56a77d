from __future__ import annotations

import os

import pytest
from catalog_helpers import SR, row, write_audio, write_csv, write_jsonl

from lab.catalog.importers import CatalogError
from lab.catalog.ingest import hash_files, ingest
from lab.util.canonical import sha256_file


def by_id(cat):
    return {i.recording_id: i for i in cat.items}


def test_decodes_wav_flac_ogg(source):
    cat = ingest(source, "demo", workers=2)
    items = by_id(cat)
    assert [i.recording_id for i in cat.items] == ["r1", "r2", "r3"]  # metadata order
    assert all(i.status == "ok" and i.catalog == "demo" for i in cat.items), cat.items
    assert {k: v.format for k, v in items.items()} == {"r1": "WAV", "r2": "FLAC", "r3": "OGG"}
    r2 = items["r2"]
    assert (r2.sample_rate, r2.channels, r2.frames) == (SR, 2, int(0.2 * SR))
    assert r2.duration_s == pytest.approx(0.2)
    assert r2.audio_sha256 == sha256_file(source / "sub" / "b.flac")
    assert r2.size_bytes == (source / "sub" / "b.flac").stat().st_size
    assert items["r1"].isrc == "GBLAB2600001"
    assert cat.manifest["counts"] == {"total": 3, "ok": 3, "rejected": 0, "rejected_by_reason": {}}
    assert cat.manifest["metadata"]["sha256"] == sha256_file(source / "metadata.jsonl")


def test_mp3_decodes(tmp_path):
    src = tmp_path / "s"
    write_audio(src / "a.mp3", "MP3", seconds=0.5)
    write_jsonl(src / "metadata.jsonl", [row("r1", "a.mp3")])
    (item,) = ingest(src, "mp3", workers=1).items
    assert (item.status, item.format) == ("ok", "MP3"), item.reject_detail


def test_corrupt_and_truncated_files_are_kept_as_decode_errors(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "noise.wav").write_bytes(os.urandom(4096))
    flac = write_audio(src / "good.flac", "FLAC", seconds=0.5).read_bytes()
    (src / "cut.flac").write_bytes(flac[: len(flac) * 2 // 3])
    wav = write_audio(src / "w.wav", "WAV", seconds=0.5).read_bytes()
    (src / "cut.wav").write_bytes(wav[: len(wav) * 2 // 3])  # libsndfile alone would shorten this silently
    ogg = write_audio(src / "o.ogg", "OGG", seconds=0.5).read_bytes()
    (src / "cut.ogg").write_bytes(ogg[: len(ogg) * 2 // 3])
    (src / "empty.wav").write_bytes(b"")
    (src / "folder.wav").mkdir()
    os.mkfifo(src / "fifo.wav")  # would block a naive open()
    rows = [
        row("noise", "noise.wav"),
        row("cutflac", "cut.flac"),
        row("cutwav", "cut.wav"),
        row("cutogg", "cut.ogg"),
        row("empty", "empty.wav"),
        row("folder", "folder.wav"),
        row("fifo", "fifo.wav"),
        row("good", "good.flac"),
        row("missing", "nope.wav"),
    ]
    write_jsonl(src / "metadata.jsonl", rows)
    items = by_id(ingest(src, "c", workers=2))
    assert len(items) == len(rows)
    for rid in ("noise", "cutflac", "cutwav", "cutogg", "empty", "folder", "fifo"):
        assert (items[rid].status, items[rid].reject_reason) == ("rejected", "decode_error"), rid
        assert items[rid].reject_detail, rid
    assert "truncated" in items["cutwav"].reject_detail
    assert items["noise"].audio_sha256 == sha256_file(src / "noise.wav")  # it was read, so it is named
    assert items["good"].status == "ok"
    assert items["missing"].reject_reason == "missing_audio" and items["missing"].audio_sha256 is None


def test_paths_leaving_the_root_are_refused_unread(tmp_path, monkeypatch):
    outside = write_audio(tmp_path / "outside" / "secret.wav", "WAV", 300)
    src = tmp_path / "s"
    write_audio(src / "ok.wav", "WAV")
    (src / "link.wav").symlink_to(outside)
    (src / "dirlink").symlink_to(outside.parent, target_is_directory=True)
    (src / "inlink.wav").symlink_to(src / "ok.wav")  # a symlink that stays inside is fine
    (src / "dangling.wav").symlink_to(tmp_path / "outside" / "nothing.wav")
    rows = [
        row("dotdot", "../outside/secret.wav"),
        row("abs", str(outside)),
        row("link", "link.wav"),
        row("dirlink", "dirlink/secret.wav"),
        row("inner_dotdot", "sub/../ok.wav"),
        row("dangling", "dangling.wav"),
        row("ok", "ok.wav"),
        row("inlink", "inlink.wav"),
    ]
    write_jsonl(src / "metadata.jsonl", rows)
    opened, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **kw: opened.append(os.fspath(path)) or real_open(path, *a, **kw))
    items = by_id(ingest(src, "p", workers=2))
    monkeypatch.undo()
    assert opened and not [p for p in opened if p.startswith(str(outside.parent))]
    secret = sha256_file(outside)
    for rid in ("dotdot", "abs", "link", "dirlink", "inner_dotdot", "dangling"):
        it = items[rid]
        assert (it.status, it.reject_reason) == ("rejected", "path_outside_catalogue"), rid
        assert it.audio_sha256 is None and it.size_bytes is None and it.frames is None, rid
    assert secret not in {i.audio_sha256 for i in items.values()}
    # ok.wav and inlink.wav are the same bytes under two ids: both fail closed
    assert items["ok"].reject_reason == items["inlink"].reject_reason == "duplicate_audio"
    assert hash_files(src, ["link.wav", "../outside/secret.wav", "ok.wav"]) == [None, None, sha256_file(src / "ok.wav")]


def test_duplicate_audio_flags_every_holder(tmp_path):
    src = tmp_path / "s"
    a = write_audio(src / "a.wav", "WAV", 440)
    (src / "copy.wav").write_bytes(a.read_bytes())
    (src / "copy2.wav").write_bytes(a.read_bytes())
    write_audio(src / "b.wav", "WAV", 880)
    write_csv(
        src / "metadata.csv", [row("r1", "a.wav"), row("r2", "copy.wav"), row("r3", "b.wav"), row("r4", "copy2.wav")]
    )
    items = by_id(ingest(src, "d", workers=2))
    for rid, others in {"r1": ("r2", "r4"), "r2": ("r1", "r4"), "r4": ("r1", "r2")}.items():
        assert items[rid].reject_reason == "duplicate_audio"
        assert all(o in items[rid].reject_detail for o in others)
        assert items[rid].audio_sha256 == sha256_file(a)
    assert items["r3"].status == "ok"


def test_bad_inputs_raise(tmp_path, source):
    with pytest.raises(CatalogError, match="invalid catalogue name"):
        ingest(source, "../evil")
    with pytest.raises(CatalogError, match="invalid catalogue name"):
        ingest(source, "name\n")
    with pytest.raises(CatalogError, match="not a folder"):
        ingest(tmp_path / "nope", "x")
    with pytest.raises(CatalogError, match="workers"):
        ingest(source, "x", workers=0)
