"""Dataset cards live beside their catalogue under LAB_HOME, and `lab catalog card` prints them."""

from __future__ import annotations

import importlib

import pytest
import yaml
from catalog_helpers import row, write_jsonl
from typer.testing import CliRunner

import lab.cli
from lab.catalog import card as card_mod
from lab.catalog.card import card_path, size_category


@pytest.fixture(scope="module")
def app():
    importlib.import_module("lab.cli.catalog")
    return lab.cli.app


def run(app, *args):
    return CliRunner().invoke(app, list(args))


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def test_ingest_writes_the_card_beside_the_catalogue_and_card_prints_it(app, source, lab_home):
    res = run(app, "catalog", "ingest", str(source), "--catalog", "tiny", "--json")
    assert res.exit_code == 0, res.output
    assert card_path("tiny") == lab_home / "catalogs" / "tiny" / "card.md"
    assert card_path("tiny").is_file()

    res = run(app, "catalog", "card", "tiny")
    assert res.exit_code == 0, res.output
    meta = front_matter(res.stdout)
    assert meta["lab"]["catalog"] == "tiny" and meta["lab"]["recordings"] == 3
    assert meta["size_categories"] == ["n<1K"]
    assert "GBLAB2600001" in res.stdout and "rights ledger" in res.stdout


def test_reingest_replaces_the_card_with_the_new_catalogue(app, source, lab_home):
    assert run(app, "catalog", "ingest", str(source), "--catalog", "tiny").exit_code == 0
    write_jsonl(source / "metadata.jsonl", [row("only", "a.wav")])
    assert run(app, "catalog", "ingest", str(source), "--catalog", "tiny").exit_code == 0
    text = card_path("tiny").read_text()
    assert front_matter(text)["lab"]["recordings"] == 1 and "| r2 |" not in text


def test_card_of_an_unknown_catalogue_fails(app, lab_home):
    res = run(app, "catalog", "card", "nothing-here")
    assert res.exit_code == 2  # an unknown name is bad input
    assert "no dataset card" in res.output


def test_long_catalogues_list_a_bounded_table(app, source, lab_home, monkeypatch):
    monkeypatch.setattr(card_mod, "MAX_LISTED", 1)
    assert run(app, "catalog", "ingest", str(source), "--catalog", "tiny").exit_code == 0
    text = card_path("tiny").read_text()
    assert "| r1 |" in text and "| r2 |" not in text and "and 2 more" in text


@pytest.mark.parametrize(
    "n, label",
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (250_000, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (10_000_000, "n>10M"),
    ],
)
def test_size_category_follows_the_hub_buckets(n, label):
    assert size_category(n) == label
