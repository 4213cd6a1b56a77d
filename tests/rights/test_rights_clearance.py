"""Clearance decisions, one exclusion reason at a time, on a real SQLite ledger.

Every test puts a control recording with a good grant next to the case, so a test that
excludes everything (or clears everything) cannot pass by accident.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from rights_helpers import SHA, amend, expire, grant, revoke

from lab.catalog.items import CatalogItem
from lab.catalog.store import items_to_table
from lab.rights.clearance import GRANT_REASONS, INGEST_REASONS, REASONS, clear, recheck
from lab.rights.ledger import Ledger
from lab.rights.policy import Policy

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)  # the helpers' grants run 2025-01-01 .. 2027-01-01
RECORDED = datetime(2025, 1, 1, tzinfo=UTC)
OTHER_SHA = "cd" * 32
POLICY = dict(
    name="test", purposes=["ai_generative_training"], territory="GB", accept_licence_classes=["permissive", "contract"]
)


def policy(**over) -> Policy:
    return Policy(**(POLICY | over))


def item(
    rid: str, *, isrc: str | None = None, sha: str | None = SHA, catalog: str = "cat", reject: str | None = None
) -> CatalogItem:
    return CatalogItem(
        recording_id=rid,
        isrc=isrc,
        title=f"Title {rid}",
        artists=["Ada"],
        description="piano",
        audio_path=f"{rid}.wav",
        catalog=catalog,
        status="rejected" if reject else "ok",
        reject_reason=reject,
        reject_detail=f"ingest said {reject}" if reject else "",
        audio_sha256=sha,
        duration_s=1.0 if sha else None,
        sample_rate=8000 if sha else None,
        channels=1 if sha else None,
    )


def subject(rid: str, **extra) -> dict:
    """A subject naming the recording in its catalogue only (the helper's default also pins an ISRC and a sha)."""
    return {"recording_id": rid, "catalog": "cat", **extra}


def good(gid: str, rid: str, **over) -> dict:
    over.setdefault("subject", subject(rid))
    return grant(gid, **over)


@pytest.fixture
def ledger(sqlite_url):
    led = Ledger(sqlite_url)
    yield led
    led.close()


def record(ledger: Ledger, *events: dict, at: datetime = RECORDED) -> None:
    ledger.append_many(list(events), recorded_at=at)


def decide(ledger: Ledger, items: list[CatalogItem], pol: Policy | None = None, at: datetime = AT) -> dict:
    table = items_to_table(items)
    d = clear(table, ledger.frame(), pol or policy(), at)
    out = {}
    for i, it in enumerate(items):
        out[it.recording_id] = {
            "cleared": bool(d.cleared[i]),
            "reason": d.reason[i],
            "detail": d.detail[i],
            "grants": d.grant_ids[i],
        }
        assert d.reason[i] is None if d.cleared[i] else d.reason[i] in REASONS
    return out


def assert_excluded(res: dict, rid: str, reason: str) -> None:
    assert not res[rid]["cleared"], res[rid]
    assert res[rid]["reason"] == reason, res[rid]


def assert_cleared(res: dict, rid: str, *grant_ids: str) -> None:
    assert res[rid]["cleared"], res[rid]
    assert res[rid]["reason"] is None
    if grant_ids:
        assert sorted(res[rid]["grants"]) == sorted(grant_ids)


# --------------------------------------------------------------------------- one reason each


def test_no_grant(ledger):
    record(ledger, good("G-ok", "ok"))
    res = decide(ledger, [item("ok"), item("orphan")])
    assert_cleared(res, "ok", "G-ok")
    assert_excluded(res, "orphan", "no_grant")
    assert res["orphan"]["grants"] == []


def test_opt_out_beats_a_labels_opt_in_for_the_same_recording(ledger):
    optout = good("G-artist-no", "r1", status="opted_out", purposes=[], territories=[], parties=[])
    record(ledger, good("G-label", "r1"), optout, good("G-ok", "ok"))
    res = decide(ledger, [item("r1"), item("ok")])
    assert_excluded(res, "r1", "opted_out")
    assert "G-artist-no" in res["r1"]["detail"]
    assert_cleared(res, "ok", "G-ok")


def test_an_opt_out_no_longer_in_force_does_not_block(ledger):
    ended = good(
        "G-no-ended", "r1", status="opted_out", purposes=[], territories=[], parties=[], valid_until="2025-06-01"
    )
    record(ledger, good("G-label", "r1"), ended)
    assert_cleared(decide(ledger, [item("r1")]), "r1", "G-label")


def test_revoked_and_a_future_revocation_does_not_exclude_yet(ledger):
    record(ledger, good("G-rev", "rev"), good("G-later", "later"), good("G-ok", "ok"))
    record(
        ledger,
        revoke("G-rev", effective_at="2025-06-01T00:00:00Z"),
        revoke("G-later", effective_at="2026-03-01T00:00:00Z"),
        at=datetime(2025, 7, 1, tzinfo=UTC),
    )
    items = [item("rev"), item("later"), item("ok")]
    res = decide(ledger, items)
    assert_excluded(res, "rev", "revoked")
    assert_cleared(res, "later", "G-later")  # revoked from 2026-03-01 on, not yet at AT
    assert_cleared(res, "ok")
    after = decide(ledger, items, at=datetime(2026, 3, 1, tzinfo=UTC))
    assert_excluded(after, "later", "revoked")
    assert_cleared(after, "ok")


def test_expired_by_valid_until_and_by_an_expire_event(ledger):
    record(ledger, good("G-term", "term", valid_until="2025-12-31"), good("G-ev", "ev"), good("G-ok", "ok"))
    record(ledger, expire("G-ev"), at=datetime(2025, 7, 2, tzinfo=UTC))  # effective 2025-07-01
    res = decide(ledger, [item("term"), item("ev"), item("ok")])
    assert_excluded(res, "term", "expired")
    assert_excluded(res, "ev", "expired")
    assert_cleared(res, "ok")


def test_valid_until_is_exclusive(ledger):
    record(ledger, good("G-edge", "edge", valid_until="2026-01-01"))
    assert_excluded(decide(ledger, [item("edge")]), "edge", "expired")
    assert_cleared(decide(ledger, [item("edge")], at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)), "edge")


def test_not_yet_valid(ledger):
    record(ledger, good("G-soon", "soon", valid_from="2026-02-01"), good("G-ok", "ok"))
    res = decide(ledger, [item("soon"), item("ok")])
    assert_excluded(res, "soon", "not_yet_valid")
    assert_cleared(res, "ok")
    assert_cleared(decide(ledger, [item("soon")], at=datetime(2026, 2, 1, tzinfo=UTC)), "soon")


def test_purpose_not_granted(ledger):
    record(ledger, good("G-eval", "eval", purposes=["eval_only"]), good("G-ok", "ok"))
    res = decide(ledger, [item("eval"), item("ok")])
    assert_excluded(res, "eval", "purpose_not_granted")
    assert_cleared(res, "ok")
    # every purpose the policy names must be granted: the helper's grant lacks commercial_output
    res = decide(ledger, [item("ok")], policy(purposes=["ai_generative_training", "commercial_output"]))
    assert_excluded(res, "ok", "purpose_not_granted")


def test_territory_not_granted_and_worldwide_covers_any_territory(ledger):
    record(
        ledger,
        good("G-asia", "asia", territories=["JP", "KR"]),
        good("G-gb", "gb", territories=["GB", "US"]),
        good("G-ww", "ww", territories=["WW"]),
    )
    res = decide(ledger, [item("asia"), item("gb"), item("ww")])
    assert_excluded(res, "asia", "territory_not_granted")
    assert_cleared(res, "gb")
    assert_cleared(res, "ww")
    for terr in ("BR", "NZ", "KR"):
        res = decide(ledger, [item("ww"), item("gb")], policy(territory=terr))
        assert_cleared(res, "ww")
        assert_excluded(res, "gb", "territory_not_granted")


def test_licence_not_accepted(ledger):
    record(ledger, good("G-nc", "nc", licence="CC-BY-NC-4.0"), good("G-ok", "ok"))
    res = decide(ledger, [item("nc"), item("ok")])
    assert_excluded(res, "nc", "licence_not_accepted")
    assert_cleared(res, "ok")
    research = policy(accept_licence_classes=["permissive", "contract", "non_commercial"])
    assert_cleared(decide(ledger, [item("nc")], research), "nc")


def test_licence_unknown_until_the_policy_declares_the_contract(ledger):
    record(
        ledger,
        good("G-x", "x", licence="LicenseRef-somebody-else"),
        good("G-lab", "lab", licence="LicenseRef-lab-demo-deal"),
        good("G-ok", "ok"),
    )
    res = decide(ledger, [item("x"), item("lab"), item("ok")])
    assert_excluded(res, "x", "licence_unknown")
    assert_cleared(res, "lab")  # LicenseRef-lab-* is a lab contract
    assert_cleared(res, "ok")
    signed = policy(contracts={"LicenseRef-somebody-else": "contract"})
    assert_cleared(decide(ledger, [item("x")], signed), "x")
    # declared, but as a class the policy does not accept
    nc = policy(contracts={"LicenseRef-somebody-else": "non_commercial"})
    assert_excluded(decide(ledger, [item("x")], nc), "x", "licence_not_accepted")


@pytest.mark.parametrize("reason", ["decode_error", "duplicate_audio", "path_outside_catalogue"])
def test_ingest_rejects_pass_through_even_with_a_good_grant(ledger, reason):
    assert reason in INGEST_REASONS
    record(ledger, good("G-bad", "bad"), good("G-ok", "ok"))
    sha = None if reason == "path_outside_catalogue" else SHA
    res = decide(ledger, [item("bad", sha=sha, reject=reason), item("ok")])
    assert_excluded(res, "bad", reason)
    assert res["bad"]["detail"] == f"ingest said {reason}"
    assert_cleared(res, "ok")


# --------------------------------------------------------------------------- versions and subjects


def test_amend_narrowing_the_territory_excludes_and_widening_clears(ledger):
    record(ledger, good("G-narrow", "narrow"), good("G-widen", "widen", territories=["US"]))
    record(
        ledger,
        amend("G-narrow", subject=subject("narrow"), territories=["US"]),
        amend("G-widen", subject=subject("widen"), territories=["WW"]),
        at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    res = decide(ledger, [item("narrow"), item("widen")])
    assert_excluded(res, "narrow", "territory_not_granted")
    assert_cleared(res, "widen", "G-widen")
    # before the amendments were recorded, version 1 decided
    before = decide(ledger, [item("narrow"), item("widen")], at=datetime(2025, 2, 1, tzinfo=UTC))
    assert_cleared(before, "narrow")
    assert_excluded(before, "widen", "territory_not_granted")


def test_a_replacement_grant_supersedes_the_old_one(ledger):
    record(ledger, good("G-old", "r1"))
    record(
        ledger,
        amend("G-new", version=1, supersedes="G-old", subject=subject("r1"), territories=["US"]),
        at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    res = decide(ledger, [item("r1")])
    assert_excluded(res, "r1", "territory_not_granted")
    assert res["r1"]["grants"] == ["G-new"]  # G-old is out of the picture, not a second opinion


def test_a_grant_pinning_the_audio_does_not_clear_other_audio(ledger):
    record(
        ledger,
        good("G-pin", "pinned", subject=subject("pinned", audio_sha256=SHA)),
        good("G-pin2", "nosha", subject=subject("nosha", audio_sha256=SHA)),
        good("G-ok", "ok"),
    )
    res = decide(ledger, [item("pinned", sha=OTHER_SHA), item("nosha", sha=None), item("ok")])
    assert_excluded(res, "pinned", "no_grant")  # fail closed: the grant names different audio
    assert_excluded(res, "nosha", "no_grant")
    assert_cleared(res, "ok")
    assert_cleared(decide(ledger, [item("pinned", sha=SHA)]), "pinned", "G-pin")


def test_every_identifier_a_grant_names_must_match(ledger):
    record(ledger, good("G-both", "r1", subject=subject("r1", isrc="GBLAB2600001")))
    res = decide(ledger, [item("r1", isrc="GBLAB2600001"), item("r2", isrc="GBLAB2600001")])
    assert_cleared(res, "r1")
    assert_excluded(res, "r2", "no_grant")
    assert_excluded(decide(ledger, [item("r1", isrc="GBLAB2600002")]), "r1", "no_grant")
    assert_excluded(decide(ledger, [item("r1", isrc=None)]), "r1", "no_grant")


def test_a_grant_by_isrc_only_clears(ledger):
    record(ledger, good("G-isrc", "", subject={"isrc": "GB-LAB-26-00007"}))  # normalised to GBLAB2600007
    res = decide(ledger, [item("a", isrc="GBLAB2600007"), item("b", isrc="GBLAB2600008"), item("c")])
    assert_cleared(res, "a", "G-isrc")
    assert_excluded(res, "b", "no_grant")
    assert_excluded(res, "c", "no_grant")


def test_a_catalogue_deal_clears_its_catalogue_only(ledger):
    record(ledger, good("G-deal", "", subject={"catalog": "label-a"}))
    items = [item("a1", catalog="label-a"), item("a2", catalog="label-a", sha=OTHER_SHA), item("b1", catalog="label-b")]
    res = decide(ledger, items)
    assert_cleared(res, "a1", "G-deal")
    assert_cleared(res, "a2", "G-deal")
    assert_excluded(res, "b1", "no_grant")


def test_several_covering_grants_the_first_reason_names_the_exclusion(ledger):
    record(
        ledger,
        good("G-asia", "r1", territories=["JP"]),
        good("G-old", "r1", valid_until="2025-06-01"),
        good("G-ok", "r2"),
        good("G-nc", "r2", licence="CC-BY-NC-4.0"),
    )
    res = decide(ledger, [item("r1"), item("r2")])
    assert GRANT_REASONS.index("expired") < GRANT_REASONS.index("territory_not_granted")
    assert_excluded(res, "r1", "expired")
    assert "G-asia: territory_not_granted" in res["r1"]["detail"]
    assert "G-old: expired" in res["r1"]["detail"]
    assert sorted(res["r1"]["grants"]) == ["G-asia", "G-old"]
    assert_cleared(res, "r2", "G-ok")  # one clearing grant is enough; only it is cited


# --------------------------------------------------------------------------- time


def test_clearing_at_a_past_moment_uses_only_events_recorded_by_then(ledger):
    record(ledger, good("G-1", "r1"), good("G-ok", "ok"))
    # a retroactive revocation: effective 2025-06-01, but only recorded on 2025-08-01
    record(ledger, revoke("G-1", effective_at="2025-06-01T00:00:00Z"), at=datetime(2025, 8, 1, tzinfo=UTC))
    record(ledger, good("G-2", "r2"), at=datetime(2025, 9, 1, tzinfo=UTC))
    items = [item("r1"), item("r2"), item("ok")]
    july = decide(ledger, items, at=datetime(2025, 7, 1, tzinfo=UTC))
    assert_cleared(july, "r1")  # the revocation was not on record yet
    assert_excluded(july, "r2", "no_grant")  # nor was G-2
    assert_cleared(july, "ok")
    now = decide(ledger, items)
    assert_excluded(now, "r1", "revoked")
    assert_cleared(now, "r2")
    assert_cleared(now, "ok")


def test_the_policy_moment_is_the_default(ledger):
    record(ledger, good("G-1", "r1", valid_until="2025-12-01"))
    table = items_to_table([item("r1")])
    assert clear(table, ledger.frame(), policy(at="2025-11-01")).cleared[0]
    assert not clear(table, ledger.frame(), policy(at="2025-12-02")).cleared[0]


def test_recheck_reports_what_no_longer_clears(ledger):
    record(ledger, good("G-1", "r1"), good("G-2", "r2"), good("G-3", "r3"))
    items = [item("r1"), item("r2"), item("r3")]
    table = items_to_table(items)
    d = clear(table, ledger.frame(), policy(), AT)
    assert d.cleared.all()
    expected = {it.recording_id: it.audio_sha256 for it in items}
    assert recheck(table, ledger.frame(), policy(), expected, at=AT) == {}
    record(ledger, revoke("G-2", effective_at="2025-12-15T00:00:00Z"), at=datetime(2025, 12, 20, tzinfo=UTC))
    problems = recheck(table, ledger.frame(), policy(), expected, at=AT)
    assert set(problems) == {"r2"}
    assert problems["r2"][0] == "revoked"
    # audio swapped in the catalogue, and a recording gone from it
    changed = items_to_table([item("r1", sha=OTHER_SHA), item("r3")])
    problems = recheck(changed, ledger.frame(), policy(), expected, at=AT)
    assert problems["r1"][0] == "audio_changed"
    assert problems["r2"][0] == "not_in_catalogue"
    assert "r3" not in problems


def test_recheck_defaults_to_now_not_to_a_pinned_policy_moment(ledger):
    record(ledger, good("G-1", "r1", valid_until="2099-01-01"), good("G-2", "r2", valid_until="2099-01-01"))
    pinned = policy(at="2025-03-01")  # e.g. re-clearing "as of" an old date
    table = items_to_table([item("r1"), item("r2")])
    assert clear(table, ledger.frame(), pinned).cleared.all()
    ledger.append(revoke("G-1"))  # recorded now, long after the pinned moment
    problems = recheck(table, ledger.frame(), pinned, {"r1": SHA, "r2": SHA})
    assert set(problems) == {"r1"}
    assert problems["r1"][0] == "revoked"


def test_an_empty_ledger_or_catalogue(ledger):
    res = decide(ledger, [item("r1")])
    assert_excluded(res, "r1", "no_grant")
    record(ledger, good("G-1", "r1"))
    d = clear(items_to_table([]), ledger.frame(), policy(), AT)
    assert len(d.cleared) == 0 and d.reason == [] and d.grant_ids == [] and d.grant_seq == {}
