"""The Hugging Face model card and the Croissant description rendered from a card bundle."""

from __future__ import annotations

import json

import pytest
from conftest import build, grant, item, snapshot
from huggingface_hub import ModelCard

from lab.cards.files import card_bytes_sha256, dump_card
from lab.cards.render import croissant, hf_license, model_card, top_sources
from lab.cards.sources import COLUMNS


def test_model_card_parses_back(bundle):
    text = model_card(bundle, license="CC-BY-NC-4.0", base_model="facebook/musicgen-small", tags=["piano"])
    parsed = ModelCard(text)
    data = parsed.data
    assert data.license == "cc-by-nc-4.0"
    assert data.base_model == "facebook/musicgen-small"
    assert data.base_model_relation == "finetune"
    assert data.library_name == "transformers" and data.pipeline_tag == "text-to-audio"
    assert data.tags == ["music", "musicgen", "text-to-audio", "lab", "piano"]
    lab = data.to_dict()["lab"]
    assert lab["snapshot"] == "snap-0123456789abcdef" and lab["schema"] == "lab.data_card/2"
    assert lab["data_card_sha256"] == card_bytes_sha256(bundle.card)
    assert lab["sources"] == "sources.parquet" and lab["sources_sha256"] == bundle.card.sources.sha256
    body = parsed.text
    # sources table with rights holders, licence, seconds, credit; the '|' in a title is escaped
    assert "Song demo-0001 \\| take 1" in body
    assert "Example Records (master_owner, master 100%)" in body
    assert "LicenseRef-lab-catalogue-deal" in body and "12.5" in body
    assert "'Song demo-0001' courtesy of Example Records" in body
    assert "Purposes: ai_generative_training" in body
    assert "Territories: FR, GB" in body and "2027-03-01" in body
    assert "| revoked | 2 |" in body
    assert "lab audit <this folder>" in body and "sources.parquet" in body


def test_model_card_other_licence_and_no_base(bundle):
    text = model_card(bundle, license="LicenseRef-lab-research-only", base_model=None, tags=())
    data = ModelCard(text).data
    assert data.license == "other"
    assert data.license_name == "lab-research-only" and data.license_link
    assert data.base_model is None
    assert data.to_dict()["lab"]["licence_expression"] == "LicenseRef-lab-research-only"


def _many(n: int):
    items = [item(f"rec-{i:04d}", ["G-1"]) for i in range(n)]
    return build(snapshot(items, [grant("G-1", seq=1)]), {f"rec-{i:04d}": float(i % 17) + 0.5 for i in range(n)})


def test_model_card_lists_only_the_top_sources():
    bundle = _many(120)
    text = model_card(bundle, license="MIT", base_model=None, top=10)
    listed = [line for line in text.splitlines() if line.startswith("| Song rec-")]
    assert len(listed) == 10
    # the longest-seen first: 7 recordings have 16.5 s, then 15.5 s
    assert [line.count("| 16.5 |") for line in listed] == [1] * 7 + [0] * 3
    assert "… and 110 more in `sources.parquet`" in text
    top = top_sources(bundle.sources, 3, by="id")
    assert [r["recording_id"] for r in top] == ["rec-0000", "rec-0001", "rec-0002"]
    by_seconds = top_sources(bundle.sources, 8)
    assert [r["seconds_seen"] for r in by_seconds] == [16.5] * 7 + [15.5]
    assert [r["recording_id"] for r in by_seconds][:2] == ["rec-0016", "rec-0033"]  # ties broken by id


@pytest.mark.parametrize(
    "spdx,expected",
    [
        ("CC-BY-4.0", "cc-by-4.0"),
        ("CC0-1.0", "cc0-1.0"),
        ("Apache-2.0", "apache-2.0"),
        ("MIT", "mit"),
        ("GPL-3.0-only", "gpl-3.0"),
        ("ODC-By-1.0", "odc-by"),
        ("CC-BY-4.0 AND LicenseRef-lab-deal", "other"),
        ("CC-BY-3.0-DE", "other"),
    ],
)
def test_hf_license_mapping(spdx, expected):
    assert hf_license(spdx)["license"] == expected


def test_croissant_describes_the_parquet_not_its_rows(bundle):
    doc = croissant(bundle)
    text = json.dumps(doc)  # plain JSON
    assert doc["@type"] == "sc:Dataset" and doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    for key in ("name", "description", "license", "url", "datePublished", "rai:dataCollection", "rai:dataUseCases"):
        assert doc[key]
    (fo,) = doc["distribution"]
    assert fo["@type"] == "cr:FileObject" and fo["contentUrl"] == "sources.parquet"
    assert fo["sha256"] == bundle.card.sources.sha256 and fo["encodingFormat"] == "application/x-parquet"
    (rs,) = doc["recordSet"]
    assert [f["name"] for f in rs["field"]] == [name for name, *_ in COLUMNS]
    assert all(f["source"]["fileObject"]["@id"] == "sources.parquet" for f in rs["field"])
    holders = next(f for f in rs["field"] if f["name"] == "rights_holders")
    assert holders["repeated"] and {s["name"] for s in holders["subField"]} >= {"name", "share", "grant_id"}
    assert "data" not in rs and "demo-0001" not in text  # no inline rows: the same size at any scale
    assert len(json.dumps(croissant(_many(300)))) < len(text) + 200
    assert doc["license"] == ["CC-BY-4.0", "CC-BY-4.0 AND CC-BY-NC-4.0", "LicenseRef-lab-catalogue-deal"]
    assert len(dump_card(bundle.card)) < 4096
