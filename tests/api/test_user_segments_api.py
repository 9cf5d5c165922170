from datetime import UTC, datetime, timedelta

import pytest

from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.reads.path import active_segments
from webapp.services.rollout import buckets as rollout


def iso(dt):
    return dt.isoformat().replace("+00:00", "Z")


def test_add_and_delete_in_one_call(api):
    for slug in ("A1", "B1", "C1"):
        api.segment(slug)
    first = api.change(1000, ["A1", "B1"]).json
    assert first["added"] == ["A1", "B1"]
    second = api.change(1000, ["C1"], ["A1"])
    assert second.status_code == 200
    assert second.json["added"] == ["C1"] and second.json["removed"] == ["A1"]
    assert [(s["slug"], s["source"]) for s in second.json["segments"]] == [
        ("B1", "explicit"),
        ("C1", "explicit"),
    ]


def test_user_with_no_segments_gets_empty_list(api):
    response = api.get("/users/123456/segments")
    assert response.status_code == 200 and response.json == {"user_id": 123456, "segments": []}


def test_errors_name_every_offending_item_and_apply_nothing(api):
    api.segment("GOOD")
    api.segment("ALSO_GOOD")
    past = iso(datetime.now(UTC) - timedelta(minutes=1))
    response = api.change(
        5, ["GOOD", "UNKNOWN_ONE", {"slug": "ALSO_GOOD", "expires_at": past}, "bad"], ["GOOD", "UNKNOWN_TWO"]
    )
    assert response.status_code == 422
    fields = {d["field"] for d in response.json["error"]["details"]}
    assert {"add[2].expires_at", "add[3]", "del[0]"} <= fields
    assert api.active(5) == []
    unknown = api.change(5, ["GOOD", "UNKNOWN_ONE"], ["UNKNOWN_TWO"])
    assert unknown.status_code == 422
    assert {d["slug"] for d in unknown.json["error"]["details"]} == {"UNKNOWN_ONE", "UNKNOWN_TWO"}
    assert api.active(5) == []
    assert api.get("/users/5/history").json["items"] == []


def test_readd_updates_expiry_without_duplicates(api):
    api.segment("TTL")
    assert api.change(9, [{"slug": "TTL", "ttl_seconds": 60}]).json["added"] == ["TTL"]
    until = iso(datetime.now(UTC) + timedelta(days=3))
    again = api.change(9, [{"slug": "TTL", "expires_at": until}]).json
    assert again["added"] == [] and again["updated"] == ["TTL"]
    assert api.active(9)[0]["expires_at"][:19] == until[:19]
    same = api.change(9, [{"slug": "TTL", "expires_at": until}]).json
    assert same["unchanged"] == ["TTL"]
    assert api.get("/segments/TTL/members").json["items"][0]["user_id"] == 9
    assert [e["operation"] for e in api.get("/users/9/history").json["items"]] == ["added"]


def test_deleting_a_segment_the_user_lacks_is_reported(api):
    api.segment("NOTMINE")
    response = api.change(3, [], ["NOTMINE"])
    assert response.status_code == 200 and response.json["not_members"] == ["NOTMINE"]


def test_request_wide_ttl_and_per_item_override(api):
    api.segment("WIDE")
    api.segment("OWN")
    until = datetime.now(UTC) + timedelta(hours=5)
    api.change(4, ["WIDE", {"slug": "OWN", "expires_at": iso(until)}], ttl_seconds=600)
    got = {s["slug"]: datetime.fromisoformat(s["expires_at"]) for s in api.active(4)}
    assert timedelta(seconds=590) < got["WIDE"] - datetime.now(UTC) <= timedelta(seconds=600)
    assert abs(got["OWN"] - until) < timedelta(milliseconds=1)


@pytest.mark.parametrize(
    "extra",
    [
        {"ttl_seconds": 10, "expires_at": "2099-01-01T00:00:00Z"},
        {"ttl_seconds": -5},
        {"ttl_seconds": True},
        {"expires_at": "2000-01-01T00:00:00Z"},
        {"expires_at": "2099-01-01T00:00:00"},
        {"expires_at": "tomorrow"},
    ],
)
def test_bad_request_wide_expiry(api, extra):
    api.segment("EXP")
    response = api.change(4, ["EXP"], **extra)
    assert response.status_code == 422
    assert api.active(4) == []


def test_slug_in_both_lists_or_twice(api):
    api.segment("BOTH")
    both = api.change(4, ["BOTH"], ["BOTH"])
    assert both.status_code == 422 and "both" in both.json["error"]["details"][0]["message"]
    twice = api.change(4, ["BOTH", {"slug": "BOTH", "ttl_seconds": 5}])
    assert twice.status_code == 422
    assert api.change(4, [], []).status_code == 422


def test_expiry_is_exact_to_the_second(db_session):
    from webapp.services.segments.lifecycle import create_segment

    create_segment(db_session, "EXACT")
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    until = now + timedelta(seconds=30)
    change_user_segments(db_session, 77, [AddSpec("EXACT", expires_at=until)], now=now)
    assert [a.slug for a in active_segments(db_session, 77, now=until - timedelta(microseconds=1))] == [
        "EXACT"
    ]
    assert active_segments(db_session, 77, now=until) == []
    # Re-adding after expiry (purge not run) is a new membership; history shows the TTL exit.
    later = until + timedelta(hours=1)
    result = change_user_segments(db_session, 77, [AddSpec("EXACT")], now=later)
    assert result.added == ["EXACT"]


def test_rollout_members_and_explicit_removal_override(api, db_session):
    seg = api.segment("HALF", rollout_percent=50)
    from webapp.models import Segment

    salt = db_session.query(Segment).filter_by(slug="HALF").one().salt
    inside = [u for u in range(1, 200) if rollout.in_rollout(salt, u, 5000)]
    outside = [u for u in range(1, 200) if not rollout.in_rollout(salt, u, 5000)]
    assert seg["rollout_percent"] == 50
    assert api.active(inside[0]) == [{"slug": "HALF", "source": "rollout", "expires_at": None}]
    assert api.active(outside[0]) == []
    # Explicit removal of a rollout member excludes them, even after raising the percentage.
    removed = api.change(inside[0], [], ["HALF"]).json
    assert removed["removed"] == ["HALF"] and removed["segments"] == []
    api.patch("/segments/HALF", {"rollout_percent": 100})
    assert api.active(inside[0]) == []
    assert api.active(outside[0])[0]["source"] == "rollout"
    assert api.get("/segments/HALF").json["excluded_count"] == 1
    # An explicit add brings them back, now as an explicit member.
    api.change(inside[0], ["HALF"])
    assert api.active(inside[0])[0]["source"] == "explicit"


def test_lowering_rollout_drops_users_and_zero_disables(api, db_session):
    api.segment("LOWER", rollout_percent=30)
    from webapp.models import Segment

    salt = db_session.query(Segment).filter_by(slug="LOWER").one().salt
    users = range(1, 400)
    at30 = [u for u in users if api.active(u)]
    assert at30 == [u for u in users if rollout.bucket(salt, u) < 3000]
    api.patch("/segments/LOWER", {"rollout_percent": 10})
    at10 = {u for u in at30 if api.active(u)}
    assert at10 == {u for u in users if rollout.bucket(salt, u) < 1000}
    api.patch("/segments/LOWER", {"rollout_percent": 0})
    assert not any(api.active(u) for u in at10)


def test_deleted_segment_never_returned(api):
    api.segment("ROLLGONE", rollout_percent=100)
    api.segment("EXPLGONE")
    api.change(8, ["EXPLGONE"])
    assert {s["slug"] for s in api.active(8)} == {"ROLLGONE", "EXPLGONE"}
    api.delete("/segments/ROLLGONE")
    api.delete("/segments/EXPLGONE")
    assert api.active(8) == []
