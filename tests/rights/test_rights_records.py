"""JSONL import: every bad line is refused with its line number and field path, and nothing is written."""

from __future__ import annotations

import pytest
from rights_helpers import amend, grant, revoke, write_jsonl

from lab.rights.ledger import Ledger, LedgerError

TWO_PARTIES_90 = [
    {"name": "A", "role": "master_owner", "right": "master", "share": 50},
    {"name": "B", "role": "performer", "right": "master", "share": 40},
]


@pytest.fixture
def ledger(sqlite_url):
    with Ledger(sqlite_url) as L:
        yield L


def _import_error(ledger, tmp_path, lines) -> str:
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    with pytest.raises(LedgerError) as exc:
        ledger.import_jsonl(path)
    assert ledger.head()[0] == 0, "a refused import must write nothing"
    return str(exc.value)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            grant("G-2", parties=TWO_PARTIES_90),
            "line 3: grant.parties: party shares per right must sum to 100 (got master=90)",
        ),
        (grant("G-2", licence="CC-BY-5.0"), "line 3: grant.licence: unknown licence id(s) in 'CC-BY-5.0'"),
        (grant("G-2", licence="MIT AND (OR"), "line 3: grant.licence: invalid licence expression"),
        (
            grant("G-2", purposes=["ai_training", "world_domination"]),
            "line 3: grant.purposes.1: Input should be 'ai_training'",
        ),
        (
            grant("G-2", territories=["usa"]),
            "line 3: grant.territories: territory 'usa' is not an ISO 3166-1 alpha-2 code: did you mean US?",
        ),
        (grant("G-2", subject={"isrc": "GB-LAB-26"}), "line 3: grant.subject.isrc: not an ISRC: 'GB-LAB-26'"),
        (
            grant("G-2", subject={"recording_id": "r", "audio_sha256": "xyz"}),
            "line 3: grant.subject.audio_sha256: audio_sha256 must be 64",
        ),
        (grant("G-2", royalties="lots"), "line 3: grant.royalties: Extra inputs are not permitted"),
        ({**revoke("G-1"), "note": "x"}, "line 3: note: Extra inputs are not permitted"),
        (grant("G-2", valid_until="2024-01-01"), "line 3: grant.valid_until: valid_until must be after valid_from"),
        (grant("G-2", issued_at="2025-01-01T00:00:00"), "line 3: grant.issued_at: Input should have timezone info"),
        (grant("G-2", purposes=[]), "line 3: grant.purposes: an opted_in grant must name at least one purpose"),
        (revoke("G-1", reason=""), "line 3: reason: String should have at least 1 character"),
        ({"kind": "pause", "grant_id": "G-1"}, "line 3: kind: Input tag 'pause'"),
        (
            amend("G-1", supersedes=None) | {"grant": {**amend("G-1")["grant"], "supersedes": None}},
            "line 3: grant.supersedes: an amend must name the grant it supersedes",
        ),
        ('{"kind": "grant", "grant": {', "line 3: invalid JSON"),
        ("[1, 2]", "line 3: expected a JSON object, got list"),
    ],
)
def test_bad_line_named_with_field(ledger, tmp_path, bad, expected):
    message = _import_error(ledger, tmp_path, [grant("G-1"), "", bad, revoke("G-1")])
    assert expected in message
    assert "nothing imported" in message


def test_every_bad_line_is_listed(ledger, tmp_path):
    message = _import_error(ledger, tmp_path, [grant("G-1", licence="nope"), grant("G-2"), "{", grant("G-3", x=1)])
    assert "3 problem(s)" in message
    assert "line 1: grant.licence" in message and "line 3: invalid JSON" in message and "line 4: grant.x" in message


def test_semantic_refusal_names_the_line(ledger, tmp_path):
    message = _import_error(ledger, tmp_path, [grant("G-1"), "", revoke("G-1"), revoke("G-1")])
    assert "line 4: revoke 'G-1': already revoked" in message


def test_good_import_with_bare_grants_and_blank_lines(ledger, tmp_path):
    bare = grant("G-2")["grant"]  # a grant object without the event wrapper is a grant event
    path = write_jsonl(tmp_path / "ok.jsonl", [grant("G-1"), "", "   ", bare, amend("G-1"), revoke("G-2")])
    stored = ledger.import_jsonl(path)
    assert [(s.seq, s.kind, s.grant_id) for s in stored] == [
        (1, "grant", "G-1"),
        (2, "grant", "G-2"),
        (3, "amend", "G-1"),
        (4, "revoke", "G-2"),
    ]
    assert ledger.verify().ok


def test_missing_file(ledger, tmp_path):
    with pytest.raises(LedgerError, match="cannot read"):
        ledger.import_jsonl(tmp_path / "nope.jsonl")
