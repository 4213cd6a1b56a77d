from __future__ import annotations

import json

import pytest
from catalog_helpers import row, write_csv, write_jsonl

from lab.catalog.importers import CatalogError, find_metadata, load_metadata


def test_jsonl_and_csv_give_the_same_rows(tmp_path):
    rows = [
        row("r1", "a.wav", artists=["Ada", "Bo"], rights_holders=["L1", "P1"]),
        row("r2", "b.wav", isrc="GBLAB2600002", licence=None, rights_holders=[]),
    ]
    j = load_metadata(write_jsonl(tmp_path / "m.jsonl", rows)).rows
    c = load_metadata(write_csv(tmp_path / "m.csv", rows)).rows
    assert [m.model_dump() for m in j] == [m.model_dump() for m in c]
    assert c[0].artists == ["Ada", "Bo"] and c[1].isrc == "GBLAB2600002" and c[1].licence is None
    assert c[1].rights_holders == []


def test_malformed_jsonl_reports_every_line_and_field(tmp_path):
    p = write_jsonl(
        tmp_path / "metadata.jsonl",
        [
            row("r1", "a.wav"),
            row("r2", "b.wav", title=""),  # line 2: empty title
            "{not json",  # line 3
            row("r4", "d.wav", artists="Ada"),  # line 4: not a list
            {**row("r5", "e.wav"), "licence_url": "x"},  # line 5: unknown field
            row("r1", "f.wav"),  # line 6: duplicate id
            "[1, 2]",  # line 7: not an object
            '{"recording_id": "r8", "recording_id": "r9"}',  # line 8: duplicate key
        ],
    )
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    got = {(i.line, i.field) for i in ei.value.issues}
    assert {
        (2, "title"),
        (3, None),
        (4, "artists"),
        (5, "licence_url"),
        (6, "recording_id"),
        (7, None),
        (8, "recording_id"),
    } <= got
    msg = str(ei.value)
    assert "metadata.jsonl:2: field 'title'" in msg and "first on line 1" in msg


def test_malformed_csv_reports_line_and_field(tmp_path):
    p = tmp_path / "metadata.csv"
    p.write_text(
        "recording_id,title,artists,description,audio_path\n"
        "r1,T,Ada,desc,a.wav\n"
        "r2,T,,desc,b.wav\n"  # line 3: no artists
        "bad id!,T,Ada,desc,c.wav\n"  # line 4: id pattern
        "r5,T,Ada,desc\n",  # line 5: too few fields
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    got = {(i.line, i.field) for i in ei.value.issues}
    assert got == {(3, "artists"), (4, "recording_id"), (5, None)}


def test_csv_header_problems(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("recording_id,title,artist,description,audio_path\nr1,T,Ada,d,a.wav\n", encoding="utf-8")
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    # "artist" is not refused (an unknown column is an extra), but the missing "artists" is, with a hint
    assert [(i.line, i.field) for i in ei.value.issues] == [(1, "artists")]
    assert "is 'artist' meant to be 'artists'?" in ei.value.issues[0].message


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(
        'recording_id,title,artists,description,audio_path\nr1,T,Ada,"two\nlines",a.wav\nr2,,Ada,d,b.wav\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    assert [(i.line, i.field) for i in ei.value.issues] == [(4, "title")]


def test_find_metadata(tmp_path):
    with pytest.raises(CatalogError, match="no metadata file"):
        find_metadata(tmp_path)
    write_jsonl(tmp_path / "metadata.jsonl", [row("r1", "a.wav")])
    assert find_metadata(tmp_path).name == "metadata.jsonl"
    write_csv(tmp_path / "metadata.csv", [row("r1", "a.wav")])
    with pytest.raises(CatalogError, match="both"):
        find_metadata(tmp_path)
    assert find_metadata(tmp_path, tmp_path / "metadata.csv").name == "metadata.csv"


def test_empty_and_non_utf8(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(CatalogError, match="no recordings"):
        load_metadata(tmp_path / "e.jsonl")
    (tmp_path / "b.jsonl").write_bytes(json.dumps(row("r1", "a.wav")).encode() + b"\n\xff\xfe\n")
    with pytest.raises(CatalogError) as ei:
        load_metadata(tmp_path / "b.jsonl")
    assert ei.value.issues[0].line == 2


def test_isrc_normalised_like_the_ledger(tmp_path):
    """Catalogue ISRCs take the ledger's canonical form, or ISRC-only grants would never match."""
    from lab.catalog.items import RecordingMeta

    meta = RecordingMeta(
        recording_id="r1", isrc="gb-lab-26-00001", title="t", artists=["a"], description="d", audio_path="a.wav"
    )
    assert meta.isrc == "GBLAB2600001"
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not an ISRC"):
        RecordingMeta(
            recording_id="r1", isrc="GB-LAB-26", title="t", artists=["a"], description="d", audio_path="a.wav"
        )


def test_sizes_and_duplicates_are_named_with_field_and_line(tmp_path):
    p = write_jsonl(
        tmp_path / "metadata.jsonl",
        [
            row("r1", "a.wav", isrc="GBLAB2600001"),
            row("r2", "b.wav", title="x" * 600),  # line 2: over-long title
            row("r3", "c.wav", artists=["Ada", "Ada"]),  # line 3: an artist twice
            row("r4", "d.wav", description="d" * 2001),  # line 4: over-long description
            row("r5", "e.wav", isrc="GB-LAB-26-00001"),  # line 5: ISRC of line 1
            row("r6", "a.wav"),  # line 6: audio file of line 1
            row("r7", "g.wav", rights_holders=["L"] * 101),  # line 7: too many rights holders
            row("r8", "h.wav", artists=["y" * 257]),  # line 8: over-long name
        ],
    )
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    got = {(i.line, i.field): i.message for i in ei.value.issues}
    assert set(got) == {
        (2, "title"),
        (3, "artists"),
        (4, "description"),
        (5, "isrc"),
        (6, "audio_path"),
        (7, "rights_holders"),
        (8, "artists[0]"),
    }
    assert "at most 512 characters" in got[(2, "title")]
    assert "'Ada' listed more than once" in got[(3, "artists")]
    assert got[(5, "isrc")] == "duplicate isrc 'GBLAB2600001' (first on line 1)"
    assert got[(6, "audio_path")] == "duplicate audio_path 'a.wav' (first on line 1)"


def test_measured_fields_have_ranges():
    from pydantic import ValidationError

    from lab.catalog.items import CatalogItem

    base = dict(recording_id="r1", title="T", artists=["Ada"], description="d", audio_path="a.wav", catalog="c")
    assert CatalogItem(**base, duration_s=1.5, sample_rate=44100, channels=2).duration_s == 1.5
    for bad in (
        {"duration_s": -1.0},
        {"duration_s": float("nan")},
        {"sample_rate": 0},
        {"channels": -2},
        {"size_bytes": -1},
    ):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            CatalogItem(**base, **bad)
