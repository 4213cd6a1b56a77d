"""The weights' licence is derived from the base and every source seen, and the model card follows it."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest
from conftest import build, grant, item, lineage, snapshot
from huggingface_hub import ModelCard

from lab.cards import CARD_FILES, load_card, write_card_files
from lab.cards.licence import NOASSERTION, derive_licence, licence_errors
from lab.cards.render import model_card
from lab.cards.schema import schema_errors
from lab.rights.licences import LicenceError

MIXED = "Apache-2.0 AND CC-BY-4.0 AND CC-BY-SA-4.0 AND LicenseRef-lab-x"


def _mixed(base: str = "Apache-2.0"):
    grants = [
        grant("G-by", seq=1, licence="CC-BY-4.0", attribution="'Song a' by Ada, courtesy of Example Records"),
        grant("G-sa", seq=2, licence="CC-BY-SA-4.0", attribution="Bo (CC BY-SA 4.0)"),
        grant("G-x", seq=3, licence="LicenseRef-lab-x", on_termination="retrain"),
    ]
    items = [item("a", ["G-by"]), item("b", ["G-sa"]), item("c", ["G-x"]), item("d", ["G-by"])]
    base_model = {**lineage()["base_model"], "licence": base, "kind": "tiny_from_config", "digest": None}
    return build(
        snapshot(items, grants),
        {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5},
        lineage_={"base_model": base_model, "relation": "pretrain"},
    )


def test_mixed_sources_and_base_derive_every_licence_once():
    bundle = _mixed()
    lic = bundle.card.licence
    assert lic.expression == MIXED  # CC-BY-4.0 seen twice, named once; sorted
    assert lic.licence_class == "share_alike"  # AND binds to the strictest
    assert lic.base == "Apache-2.0"
    assert lic.sources == ["CC-BY-4.0", "CC-BY-SA-4.0", "LicenseRef-lab-x"]


def test_unseen_sources_do_not_count():
    bundle = _mixed()
    seen_only = bundle.sources.filter(bundle.sources["licence"].to_numpy(zero_copy_only=False) != "CC-BY-SA-4.0")
    assert derive_licence("Apache-2.0", seen_only).expression == "Apache-2.0 AND CC-BY-4.0 AND LicenseRef-lab-x"


def test_inherited_sources_carry_their_licence():
    parent = build(
        snapshot([item("p", ["G-nc"])], [grant("G-nc", seq=1, licence="CC-BY-NC-4.0")]),
        {"p": 4.0},
        checkpoint_id="parent-step-000010",
    )
    lic = derive_licence("Apache-2.0", pa.concat_tables([_mixed().sources, parent.sources]))
    assert "CC-BY-NC-4.0" in lic.expression.split(" AND ")
    assert lic.licence_class == "non_commercial"


def test_fresh_base_without_sources_asserts_nothing():
    empty = _mixed().sources.slice(0, 0)
    lic = derive_licence("none", empty)
    assert (lic.expression, lic.licence_class) == (NOASSERTION, "unknown")


def test_an_unparseable_base_licence_is_refused_in_one_line():
    with pytest.raises(LicenceError, match="base model licence 'Apache 2'") as info:
        derive_licence("Apache 2", _mixed().sources)
    assert "\n" not in str(info.value)


def test_model_card_says_other_and_links_the_licence_file():
    data = ModelCard(model_card(_mixed(), base_model=None)).data
    assert data.license == "other"  # not the base's apache-2.0
    assert data.license_link == "LICENSE"
    assert data.license_name == "apache-2.0-and-cc-by-4.0-and-cc-by-sa-4.0-and-licenseref-lab-x"
    assert data.to_dict()["lab"]["licence_expression"] == MIXED


def test_a_single_hub_licence_is_named_as_is():
    grants = [grant("G-by", seq=1, licence="CC-BY-4.0")]
    base_model = {**lineage()["base_model"], "licence": "none", "kind": "tiny_from_config", "digest": None}
    bundle = build(
        snapshot([item("a", ["G-by"])], grants), {"a": 1.0}, lineage_={"base_model": base_model, "relation": "pretrain"}
    )
    data = ModelCard(model_card(bundle, base_model=None)).data
    assert data.license == "cc-by-4.0" and data.license_link is None


def test_licence_file_lists_licences_grants_and_credits(tmp_path):
    write_card_files(_mixed(), tmp_path, base_model_hub_id=None)
    assert "LICENSE" in CARD_FILES
    text = (tmp_path / "LICENSE").read_text()
    assert f"SPDX-License-Identifier: {MIXED}" in text
    assert "Licence class: share_alike" in text
    assert "https://spdx.org/licenses/CC-BY-SA-4.0.html" in text
    assert "  CC-BY-4.0: 2 recording(s); grants: G-by" in text
    assert "  LicenseRef-lab-x: 1 recording(s); grants: G-x" in text
    assert "'Song a' by Ada, courtesy of Example Records" in text and "Bo (CC BY-SA 4.0)" in text
    assert "Purposes: ai_training, ai_generative_training" in text and "When a grant ends: retrain" in text


def test_json_schema_validates_the_card_and_requires_the_licence(tmp_path):
    write_card_files(_mixed(), tmp_path, base_model_hub_id=None)
    raw = orjson.loads((tmp_path / "data_card.json").read_bytes())
    assert schema_errors(raw) == []
    assert raw["licence"]["expression"] == MIXED
    del raw["licence"]
    assert any("licence" in e for e in schema_errors(raw))
    raw_bad_class = orjson.loads((tmp_path / "data_card.json").read_bytes())
    raw_bad_class["licence"]["licence_class"] = "free-for-all"
    assert any("licence_class" in e for e in schema_errors(raw_bad_class))


def test_a_card_claiming_a_looser_licence_is_refused(tmp_path):
    bundle = _mixed()
    looser = bundle.card.model_copy(
        update={"licence": bundle.card.licence.model_copy(update={"expression": "Apache-2.0"})}
    )
    errors = licence_errors(looser, bundle.sources)
    assert errors and "licence does not match the sources" in errors[0]
    write_card_files(bundle, tmp_path, base_model_hub_id=None)
    assert load_card(tmp_path).card.licence.expression == MIXED
