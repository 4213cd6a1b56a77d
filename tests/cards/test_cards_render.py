"""The Hugging Face model card and the Croissant description rendered from a data card."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from lab.cards.render import croissant, hf_license, model_card
from lab.cards.schema import bytes_sha256, write_card, card_sha256


def test_model_card_parses_back(card, tmp_path):
    path = write_card(card, tmp_path / "data_card.json")
    text = model_card(card, license="CC-BY-NC-4.0", base_model="facebook/musicgen-small", tags=["piano"])
    parsed = ModelCard(text)
    data = parsed.data
    assert data.license == "cc-by-nc-4.0"
    assert data.base_model == "facebook/musicgen-small"
    assert data.base_model_relation == "finetune"
    assert data.library_name == "transformers" and data.pipeline_tag == "text-to-audio"
    assert data.tags == ["music", "musicgen", "text-to-audio", "lab", "piano"]
    lab = data.to_dict()["lab"]
    assert lab["snapshot"] == "snap-0123456789abcdef"
    assert lab["data_card_sha256"] == card_sha256(path) == bytes_sha256(card)
    body = parsed.text
    # sources table with rights holders, licence, seconds, credit; the '|' in a title is escaped
    assert "Song demo-0001 \\| take 1" in body
    assert "Example Records (master_owner, master 100%)" in body
    assert "LicenseRef-lab-catalogue-deal" in body and "12.5" in body
    assert "courtesy of Example Records" in body
    assert "Purposes: ai_training, ai_generative_training" in body
    assert "Territories: FR, GB" in body and "2027-06-30" in body
    assert "| revoked | 2 |" in body
    assert "lab audit <this folder>" in body


def test_model_card_other_licence_and_no_base(card):
    text = model_card(card, license="LicenseRef-lab-research-only", base_model=None, tags=())
    data = ModelCard(text).data
    assert data.license == "other"
    assert data.license_name == "lab-research-only" and data.license_link
    assert data.base_model is None
    assert data.to_dict()["lab"]["licence_expression"] == "LicenseRef-lab-research-only"


@pytest.mark.parametrize(
    "spdx,expected",
    [("CC-BY-4.0", "cc-by-4.0"), ("CC0-1.0", "cc0-1.0"), ("Apache-2.0", "apache-2.0"), ("MIT", "mit"),
     ("GPL-3.0-only", "gpl-3.0"), ("ODC-By-1.0", "odc-by"), ("CC-BY-4.0 AND LicenseRef-lab-deal", "other"),
     ("CC-BY-3.0-DE", "other")],
)
def test_hf_license_mapping(spdx, expected):
    assert hf_license(spdx)["license"] == expected


def test_croissant_shape(card):
    doc = croissant(card)
    json.dumps(doc)  # plain JSON
    assert doc["@type"] == "sc:Dataset" and doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert doc["@context"]["rai"] == "http://mlcommons.org/croissant/RAI/"
    for key in ("name", "description", "license", "url", "datePublished", "rai:dataCollection", "rai:dataUseCases"):
        assert doc[key]
    (rs,) = doc["recordSet"]
    field_ids = {f["@id"] for f in rs["field"]}
    assert len(rs["data"]) == len(card.sources)
    for row in rs["data"]:
        assert set(row) <= field_ids
    assert rs["data"][0]["sources/seconds_seen"] == 12.5
