"""Column-wise canonical JSON text against orjson per value (what the leaf digests rely on)."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pytest

from lab.snapshot import jsoncols as jc
from lab.util.canonical import canonical_json

TRICKY = ['quote " and \\', "nl\n\t\x00\x1f\x7f", "é 漢字 🎵 \u2028", "plain", "", None]


def as_json(col) -> list[str]:
    if isinstance(col, jc.Raw):
        return ['"' + v + '"' for v in col.arr.to_pylist()]
    return col.to_pylist()


@pytest.mark.parametrize(
    "values",
    [
        TRICKY,  # unique values: escaped row by row
        TRICKY * 40,  # repeated values: escaped once per distinct value
        ["no escapes", "at all"] * 3,
        [None, "x"],
    ],
)
def test_json_str_is_orjson_per_value(values):
    arr = pa.array(values, pa.string())
    assert as_json(jc.json_str(arr)) == [orjson.dumps(v).decode() for v in values]
    # a slice sees only its own bytes
    assert as_json(jc.json_str(arr.slice(1, 3))) == [orjson.dumps(v).decode() for v in values[1:4]]


def test_distinct_values_numbers_timestamps_and_objects():
    floats = [0.1, 1e-7, 30.0, 1e16, -0.0, None, 0.1]
    assert jc.json_each_distinct(pa.array(floats)).to_pylist() == [orjson.dumps(v).decode() for v in floats]
    ts = [datetime(2027, 1, 1, tzinfo=timezone.utc), None, datetime(2027, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)]
    got = jc.json_each_distinct(pa.array(ts, pa.timestamp("us", tz="UTC"))).to_pylist()
    assert got == [canonical_json(v).decode() for v in ts]
    lists = pa.array([["b", 'a"'], [], None, ["x"]], pa.list_(pa.string()))
    obj = jc.json_object({"z": jc.json_str_list(lists), "a": jc.json_int(pa.array([1, 2, None, 4]))})
    want = [{"z": ["b", 'a"'], "a": 1}, {"z": [], "a": 2}, {"z": None, "a": None}, {"z": ["x"], "a": 4}]
    assert obj.to_pylist() == [canonical_json(w).decode() for w in want]
