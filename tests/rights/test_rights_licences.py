"""Licence classes: every standard SPDX id decided on purpose, and `explain` says why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.rights.licences import (
    DELIBERATELY_UNKNOWN,
    EXPLICIT,
    LicenceClass,
    LicenceError,
    canonical_id,
    classify,
    explain,
    standard_ids,
)
from lab.rights.policy import Policy

LICENCES_DOC = Path(__file__).resolve().parents[2] / "docs" / "licences.md"  # linked from the README


def test_every_standard_spdx_id_is_classified_unless_deliberately_unknown():
    ids = standard_ids()
    assert len(ids) > 600  # the whole SPDX list, current and deprecated ids
    unknown = {canonical_id(i) for i in ids if classify(i) is LicenceClass.unknown}
    assert unknown == set(DELIBERATELY_UNKNOWN)
    # every explicit decision names an id the index knows (a typo there would silently do nothing)
    known = {canonical_id(i) for i in ids}
    assert set(EXPLICIT) | set(DELIBERATELY_UNKNOWN) <= known


def test_the_docs_list_every_deliberately_unknown_id():
    text = LICENCES_DOC.read_text(encoding="utf-8")
    missing = [i for i in DELIBERATELY_UNKNOWN if not re.search(rf"`{re.escape(i)}`", text)]
    assert not missing


@pytest.mark.parametrize(
    "expr, klass",
    [
        ("GPL-2.0-only", "share_alike"),
        ("GPL-2.0", "share_alike"),
        ("LGPL-2.1-or-later", "share_alike"),
        ("AGPL-3.0-only", "share_alike"),
        ("MPL-2.0", "share_alike"),
        ("EUPL-1.2", "share_alike"),
        ("CC-PDM-1.0", "permissive"),
        ("CC0-1.0", "permissive"),
        ("Unlicense", "permissive"),
        ("PDDL-1.0", "permissive"),
        ("CC-BY-1.0", "permissive"),
        ("CC-BY-2.0", "permissive"),
        ("CC-BY-2.5", "permissive"),
        ("CC-BY-3.0-DE", "permissive"),
        ("CC-BY-3.0-IGO", "permissive"),
        ("MIT", "permissive"),
        ("ISC", "permissive"),
        ("Zlib", "permissive"),
        ("Apache-2.0", "permissive"),
        ("BSD-3-Clause", "permissive"),
        ("CC-BY-SA-2.1-JP", "share_alike"),
        ("CC-SA-1.0", "share_alike"),
        ("CC-BY-NC-3.0-DE", "non_commercial"),
        ("CC-BY-NC-SA-2.0-UK", "non_commercial"),
        ("PolyForm-Noncommercial-1.0.0", "non_commercial"),
        ("CC-BY-ND-3.0-DE", "no_derivatives"),
        ("CC-BY-NC-ND-3.0-IGO", "no_derivatives"),
        ("GPL-2.0-only WITH Classpath-exception-2.0", "share_alike"),
        ("LicenseRef-lab-deal", "contract"),
        ("LicenseRef-somebody", "unknown"),
        ("BUSL-1.1", "unknown"),
        ("MIT OR CC-BY-NC-4.0", "permissive"),
        ("MIT AND CC-BY-NC-4.0", "non_commercial"),
        ("not a licence", "unknown"),
    ],
)
def test_classes(expr, klass):
    assert classify(expr).name == klass


def test_explain_names_each_symbol_its_rule_and_the_combination():
    e = explain("MIT AND (CC-BY-NC-4.0 OR GPL-3.0-only)")
    assert e.licence_class == "share_alike"
    rules = {s.symbol: (s.licence_class, s.rule) for s in e.symbols}
    assert rules["MIT"] == ("permissive", "index category 'Permissive'")
    assert rules["CC-BY-NC-4.0"][0] == "non_commercial" and "NonCommercial" in rules["CC-BY-NC-4.0"][1]
    assert rules["GPL-3.0-only"] == ("share_alike", "index category 'Copyleft'")
    assert e.steps[0].startswith("CC-BY-NC-4.0 OR GPL-3.0-only → share_alike (OR")
    assert e.steps[1].endswith("(AND: every licence binds, the strictest wins: permissive, share_alike)")
    assert [s.symbol for s in e.deciding()] == ["GPL-3.0-only"]
    assert "not a standard" in explain("LicenseRef-x").symbols[0].rule
    assert explain("MIT AND Foo-9").error.startswith("unknown licence id(s)")


def test_a_policy_maps_any_licence_id_to_a_class():
    base = dict(name="p", purposes=["ai_training"], territory="GB", accept_licence_classes=["permissive"])
    p = Policy(**base, licence_classes={"gpl-2.0": "permissive", "LicenseRef-x": "contract"})
    assert p.licence_classes == {"GPL-2.0-only": "permissive", "LicenseRef-x": "contract"}
    e = explain("GPL-2.0-only", p.licence_classes)
    assert e.licence_class == "permissive" and e.symbols[0].rule == "policy licence_classes override"
    assert classify("GPL-2.0-only") is LicenceClass.share_alike  # the override is the policy's, not global
    # its former name still reads, and the stored key (snapshot / card headers) keeps it
    old = Policy(**base, contracts={"LicenseRef-x": "contract"})
    assert old.licence_classes == {"LicenseRef-x": "contract"} and old.identity()["contracts"] == {
        "LicenseRef-x": "contract"
    }
    with pytest.raises(ValueError, match="Foo-9"):
        Policy(**base, licence_classes={"Foo-9": "permissive"})
    with pytest.raises(ValueError, match="'liberal' is not a licence class"):
        Policy(**base, licence_classes={"MIT": "liberal"})
    with pytest.raises(ValueError, match="names 'GPL-2.0-only' again"):
        Policy(**base, licence_classes={"GPL-2.0": "permissive", "GPL-2.0-only": "share_alike"})


def test_canonical_id_refuses_an_expression():
    assert canonical_id("mit") == "MIT"
    with pytest.raises(LicenceError, match="not one licence id"):
        canonical_id("MIT OR ISC")
