"""The card's files in a folder: written once validated, loaded once validated, and every tamper refused."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lab.cards import CARD_FILES, CardError, card_errors, card_sha256, load_card, write_card_files
from lab.cards.files import dump_card
from lab.cards.sources import parquet_bytes


def _write(bundle, folder):
    folder.mkdir(parents=True, exist_ok=True)
    write_card_files(bundle, folder, base_model_hub_id="facebook/musicgen-small")
    return folder


def _forge(folder, table: pa.Table, bundle, **card_updates) -> None:
    """Write a table and a card that cites its exact bytes (so only the rule under test can fail)."""
    data = parquet_bytes(table)
    sources = bundle.card.sources.model_copy(
        update={"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **card_updates}
    )
    card = bundle.card.model_copy(update={"sources": sources})
    (folder / "sources.parquet").write_bytes(data)
    (folder / "data_card.json").write_bytes(dump_card(card))


def test_round_trip(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    assert sorted(p.name for p in folder.iterdir()) == sorted(CARD_FILES)
    again = load_card(folder)
    assert again.card == bundle.card
    assert again.sources.equals(bundle.sources)
    assert (folder / "data_card.json").read_bytes() == dump_card(again.card)  # stable bytes → stable sha256
    assert (
        card_sha256(folder)
        == card_sha256(folder / "data_card.json")
        == hashlib.sha256((folder / "data_card.json").read_bytes()).hexdigest()
    )
    assert card_errors(folder) == []
    text = (folder / "data_card.json").read_text()
    assert text.count("\n") < 120, "the card stays small and readable by eye"


def test_pandas_reads_sources(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    df = pd.read_parquet(folder / "sources.parquet")
    assert list(df["recording_id"]) == ["demo-0001", "demo-0002", "demo-0003"]
    assert df["seconds_seen"].sum() == 24.0
    assert str(df["valid_until"].dtype).startswith("datetime64[us, UTC]")
    assert list(df.loc[2, "grant_ids"]) == ["G-0003a", "G-0003b"]
    assert df.loc[2, "rights_holders"][0]["name"] == "New Label"


def test_tampered_sources_refused(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    table = bundle.sources.set_column(
        bundle.sources.schema.get_field_index("seconds_seen"), "seconds_seen", pa.array([13.5, 7.5, 3.0])
    )  # same total, another split
    (folder / "sources.parquet").write_bytes(parquet_bytes(table))
    errors = card_errors(folder)
    assert any("sha256" in e for e in errors), errors
    with pytest.raises(CardError, match="sha256"):
        load_card(folder)
    (folder / "sources.parquet").write_bytes(b"PAR1 not really")
    assert any("sources.parquet" in e for e in card_errors(folder))
    (folder / "sources.parquet").unlink()
    assert any("cannot read" in e for e in card_errors(folder))


def test_duplicate_row_refused(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    table = pa.concat_tables([bundle.sources, bundle.sources.slice(0, 1)])
    _forge(folder, table, bundle, rows=4, own_rows=4)
    with pytest.raises(CardError, match=r"duplicate \(recording_id, seen_by\).*demo-0001@run-abc-step-000200"):
        load_card(folder)


def _replace_holders(table: pa.Table, row: int, share: float) -> pa.Table:
    holders = table["rights_holders"].to_pylist()
    holders[row][0]["share"] = share
    col = table.schema.get_field_index("rights_holders")
    return table.set_column(col, table.schema.field(col), pa.array(holders, table.schema.field(col).type))


def test_shares_not_summing_refused(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    _forge(folder, _replace_holders(bundle.sources, 1, 90.0), bundle)
    errors = card_errors(folder)
    assert len(errors) == 1 and "shares per right must sum to 100" in errors[0] and "demo-0002" in errors[0]


def test_validity_mismatch_refused(bundle, tmp_path):
    folder = _write(bundle, tmp_path / "ck")
    col = bundle.sources.schema.get_field_index("territories")
    widened = bundle.sources.set_column(col, bundle.sources.schema.field(col), pa.array([["WW"]] * 3))
    _forge(folder, widened, bundle)  # rows say anywhere; the card still says FR, GB
    errors = card_errors(folder)
    assert len(errors) == 1 and errors[0].startswith("validity does not match"), errors


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda t: t.set_column(
                t.schema.get_field_index("seconds_seen"), "seconds_seen", pa.array([12.5, float("inf"), 4.0])
            ),
            "not finite",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("audio_sha256"),
                "audio_sha256",
                pa.array(["xyz", *t["audio_sha256"].to_pylist()[1:]]),
            ),
            "audio_sha256 does not match",
        ),
        (
            lambda t: t.set_column(t.schema.get_field_index("isrc"), "isrc", pa.array(["gb-lab-26", None, None])),
            "isrc does not match",
        ),
        (
            lambda t: t.set_column(t.schema.get_field_index("title"), "title", pa.array(["x", None, "y"])),
            "title is null",
        ),
        (lambda t: t.drop_columns(["credit"]), "missing column credit"),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("seconds_seen"), "seconds_seen", pc.cast(t["seconds_seen"], pa.float32())
            ),
            "seconds_seen is float",
        ),
    ],
    ids=["inf-seconds", "bad-sha", "bad-isrc", "null-title", "missing-column", "wrong-type"],
)
def test_column_checks(bundle, tmp_path, change, message):
    from lab.cards.sources import sources_errors

    errors = sources_errors(change(bundle.sources), bundle.card)
    assert any(message in e for e in errors), errors


def test_write_refuses_an_invalid_bundle(bundle, tmp_path):
    import dataclasses

    bad = dataclasses.replace(bundle, sources=_replace_holders(bundle.sources, 0, 50.0), parquet=None)
    with pytest.raises(CardError, match="sum to 100"):
        write_card_files(bad, tmp_path, base_model_hub_id=None)
    assert not (tmp_path / "data_card.json").exists()


def test_missing_card(tmp_path):
    assert card_errors(tmp_path) and "data_card.json" in card_errors(tmp_path)[0]
    (tmp_path / "data_card.json").write_text(json.dumps({"schema": "lab.data_card/2"}))
    assert card_errors(tmp_path)
