"""Bulk remove (DELETE /segments/<slug>/members) and replace (PUT): synchronous and background,
semantics, history rows, one segment activity entry per operation, validation, previews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from webapp.jobs.worker import run_worker
from webapp.models import BulkOperation
from webapp.platform.extensions import db
from webapp.services import impact
from webapp.services.history.replay import user_history
from webapp.services.membership import bulk


def sql(query, **params):
    return db.session.execute(sa.text(query), params)


def members(slug):
    return [
        row[0]
        for row in sql(
            "SELECT m.user_id FROM memberships m JOIN segments s ON s.id = m.segment_id "
            "WHERE s.slug = :slug AND s.deleted_at IS NULL ORDER BY 1",
            slug=slug,
        )
    ]


def expiries(slug):
    return {
        row[0]
        for row in sql(
            "SELECT DISTINCT m.expires_at FROM memberships m JOIN segments s ON s.id = m.segment_id "
            "WHERE s.slug = :slug AND s.deleted_at IS NULL",
            slug=slug,
        )
    }


def events(slug, action):
    return sql(
        "SELECT user_id, reason, actor FROM membership_events WHERE segment_slug = :slug "
        "AND action = :action ORDER BY user_id",
        slug=slug,
        action=action,
    ).all()


def activity(slug):
    return sql(
        "SELECT kind, detail, actor FROM segment_events WHERE segment_slug = :slug "
        "AND kind LIKE 'members_%' ORDER BY id",
        slug=slug,
    ).all()


def excluded(slug):
    return [
        row[0]
        for row in sql(
            "SELECT e.user_id FROM rollout_exclusions e JOIN segments s ON s.id = e.segment_id "
            "WHERE s.slug = :slug ORDER BY 1",
            slug=slug,
        )
    ]


def fill(api, slug, ids, **extra):
    response = api.post(f"/segments/{slug}/members", {"user_ids": list(ids), **extra})
    assert response.status_code == 200, response.json
    return response.json


# -- synchronous ---------------------------------------------------------------------------


def test_bulk_remove_takes_listed_members_out_with_history_and_one_activity_entry(api):
    api.segment("RM_SYNC")
    fill(api, "RM_SYNC", range(1, 11))
    response = api.delete(
        "/segments/RM_SYNC/members", {"user_ids": [2, 3, 3, 4, 99]}, headers={"X-Actor": "alice"}
    )
    assert response.status_code == 200, response.json
    assert response.json == {"segment": "RM_SYNC", "received": 5, "removed": 3, "not_members": 1}
    assert members("RM_SYNC") == [1, 5, 6, 7, 8, 9, 10]
    assert events("RM_SYNC", "removed") == [(u, "api", "api (X-Actor: alice)") for u in (2, 3, 4)]
    assert api.active(3) == []
    kinds = [(kind, detail["count"], actor) for kind, detail, actor in activity("RM_SYNC")]
    assert kinds == [("members_added", 10, "api"), ("members_removed", 3, "api (X-Actor: alice)")]
    # removing them again changes nothing and is still one entry
    again = api.delete("/segments/RM_SYNC/members", {"user_ids": [2, 3]}).json
    assert (again["removed"], again["not_members"]) == (0, 2) and len(events("RM_SYNC", "removed")) == 3


def test_bulk_remove_excludes_users_in_through_the_rollout_like_a_per_user_removal(api, db_session):
    api.segment("RM_ROLLOUT", rollout_percent=100)
    fill(api, "RM_ROLLOUT", [1, 2])
    response = api.delete("/segments/RM_ROLLOUT/members", {"user_ids": [1, 3]})
    # 1 (explicit, covered) and 3 (only through the rollout) both leave; 2 and 4 stay in
    assert response.json["removed"] == 2 and response.json["not_members"] == 0
    assert excluded("RM_ROLLOUT") == [1, 3]
    assert api.active(1) == [] and api.active(3) == []
    assert [s["source"] for s in api.active(2)] == ["explicit"]
    assert [s["source"] for s in api.active(4)] == ["rollout"]
    for user in (1, 3):  # history says they left, and replaying it gives their state
        assert [e.operation for e in user_history(db_session, user)][-1] == "removed"
    # a per-user add lifts the exclusion as usual
    api.change(3, ["RM_ROLLOUT"])
    assert [s["source"] for s in api.active(3)] == ["explicit"]


def test_bulk_remove_excludes_exactly_whom_the_rollout_covers_as_the_read_path_sees_it(api):
    api.segment("RM_HALF", rollout_percent=50)
    fill(api, "RM_HALF", range(1, 101, 3))
    before = {u: [s["source"] for s in api.active(u) if s["slug"] == "RM_HALF"] for u in range(1, 201)}
    covered = [u for u in range(1, 201) if before[u] == ["rollout"]]
    assert 60 < len(covered) < 140  # about half of the users who are not explicit members
    removed = api.delete("/segments/RM_HALF/members", {"user_ids": list(range(1, 201))}).json["removed"]
    assert removed == sum(1 for u in before if before[u])
    assert all(not any(s["slug"] == "RM_HALF" for s in api.active(u)) for u in range(1, 201))
    explicit_covered = set(excluded("RM_HALF")) - set(covered)  # explicit members the rollout covers too
    assert explicit_covered <= set(range(1, 101, 3))
    assert set(covered) <= set(excluded("RM_HALF"))


def test_bulk_replace_makes_the_explicit_members_exactly_the_list_with_the_new_expiry(api):
    api.segment("REP_SYNC")
    fill(api, "REP_SYNC", range(1, 11))
    until = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    body = {"user_ids": [*range(5, 16), 15], "expires_at": until.isoformat().replace("+00:00", "Z")}
    response = api.put("/segments/REP_SYNC/members", body, headers={"X-Actor": "bob"})
    assert response.status_code == 200, response.json
    assert response.json == {
        "segment": "REP_SYNC",
        "received": 12,
        "added": 5,
        "updated": 6,
        "removed": 4,
        "unchanged": 0,
    }
    assert members("REP_SYNC") == list(range(5, 16))
    assert expiries("REP_SYNC") == {until}
    assert [u for u, _, _ in events("REP_SYNC", "removed")] == [1, 2, 3, 4]
    assert {(reason, actor) for _, reason, actor in events("REP_SYNC", "removed")} == {
        ("api", "api (X-Actor: bob)")
    }
    assert [u for u, _, _ in events("REP_SYNC", "added")] == [*range(1, 11), *range(11, 16)]
    # the same replace again: nothing changes
    again = api.put("/segments/REP_SYNC/members", body).json
    assert (again["added"], again["updated"], again["removed"], again["unchanged"]) == (0, 0, 0, 11)
    # without an expiry, every member is made permanent
    permanent = api.put("/segments/REP_SYNC/members", {"user_ids": [5, 6]}).json
    assert (permanent["updated"], permanent["removed"]) == (2, 9) and expiries("REP_SYNC") == {None}
    replaced = [
        (detail["count"], detail["added"], detail["removed"], actor)
        for kind, detail, actor in activity("REP_SYNC")
        if kind == "members_replaced"
    ]
    assert replaced == [(11, 5, 4, "api (X-Actor: bob)"), (11, 0, 0, "api"), (2, 0, 9, "api")]


def test_replace_leaves_rollout_only_users_and_excludes_removed_covered_members(api):
    api.segment("REP_ROLLOUT", rollout_percent=100)
    fill(api, "REP_ROLLOUT", [1, 2])
    result = api.put("/segments/REP_ROLLOUT/members", {"user_ids": [2, 3]}).json
    # user 3 was in through the rollout: made explicit, the answer unchanged (updated, not added)
    assert (result["added"], result["updated"], result["removed"]) == (0, 1, 1)
    assert members("REP_ROLLOUT") == [2, 3] and excluded("REP_ROLLOUT") == [1]
    assert api.active(1) == []  # the removed member left, though the rollout covers them
    assert [s["source"] for s in api.active(4)] == ["rollout"]  # not listed, never explicit: stays


def test_replace_lifts_exclusions_of_listed_users(api):
    api.segment("REP_LIFT", rollout_percent=100)
    api.delete("/segments/REP_LIFT/members", {"user_ids": [7]})
    assert excluded("REP_LIFT") == [7]
    api.put("/segments/REP_LIFT/members", {"user_ids": [7]})
    assert excluded("REP_LIFT") == [] and [s["source"] for s in api.active(7)] == ["explicit"]


def test_an_expired_member_not_yet_purged_leaves_by_ttl_not_by_the_removal(api):
    api.segment("RM_STALE")
    fill(api, "RM_STALE", [1, 2])
    sql("UPDATE memberships SET expires_at = now() - interval '1 hour' WHERE user_id = 1")
    assert api.delete("/segments/RM_STALE/members", {"user_ids": [1, 2]}).json["removed"] == 1
    assert [(u, reason) for u, reason, _ in events("RM_STALE", "removed")] == [(1, "ttl"), (2, "api")]


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("delete", {"user_ids": []}, "user_ids"),
        ("delete", {"user_ids": [1, 0, -5]}, "user_ids[1]"),
        ("delete", {"user_ids": [1, True]}, "user_ids[1]"),
        ("delete", {"user_ids": [1], "ttl_seconds": 60}, "ttl_seconds"),
        ("put", {"user_ids": [1, "2"]}, "user_ids[1]"),
        ("put", {"user_ids": [1], "ttl_seconds": 60, "expires_at": "2099-01-01T00:00:00Z"}, "ttl_seconds"),
        ("put", {"user_ids": [1], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ("put", {"user_ids": [1], "ttl_seconds": 0}, "ttl_seconds"),
    ],
)
def test_a_bad_request_changes_nothing(api, method, body, field):
    api.segment("RM_BAD")
    fill(api, "RM_BAD", [1, 2, 3])
    response = getattr(api, method)("/segments/RM_BAD/members", body)
    assert response.status_code == 422, response.json
    assert set(response.json) == {"error"} and response.json["error"]["code"] == "validation_failed"
    assert field in {d["field"] for d in response.json["error"]["details"]}, response.json
    assert members("RM_BAD") == [1, 2, 3] and events("RM_BAD", "removed") == []


def test_unknown_segment_malformed_body_and_too_many_ids(api):
    assert api.delete("/segments/NOPE/members", {"user_ids": [1]}).status_code == 404
    assert api.put("/segments/NOPE/members", {"user_ids": [1]}).json["error"]["code"] == "not_found"
    raw = api.client.put("/api/v1/segments/NOPE/members", data="{", content_type="application/json")
    assert raw.status_code == 400 and raw.json["error"]["code"] == "malformed_json"
    form = api.client.delete("/api/v1/segments/NOPE/members", data="user_ids=1")
    assert form.status_code == 415
    api.segment("RM_LIMIT")
    too_many = api.put("/segments/RM_LIMIT/members", {"user_ids": list(range(1, 1_000_002))})
    assert too_many.status_code == 422


def test_a_sync_bulk_add_is_one_activity_entry(api):
    api.segment("ADD_ACT")
    fill(api, "ADD_ACT", [1, 2, 3])
    fill(api, "ADD_ACT", [3, 4])
    assert [(kind, detail["count"], detail["received"]) for kind, detail, _ in activity("ADD_ACT")] == [
        ("members_added", 3, 3),
        ("members_added", 1, 2),
    ]


# -- the dashboard's confirmation counts (services.impact, the API's dry run) -----------------


def moved(found):
    return found.own.leaving, found.own.joining


def test_previews_count_who_leaves_and_who_joins(api, db_session):
    api.segment("PREVIEW")
    fill(api, "PREVIEW", range(1, 11))
    sql("UPDATE memberships SET expires_at = now() - interval '1 second' WHERE user_id = 10")  # not live
    assert moved(impact.preview_remove(db_session, "PREVIEW", [1, 2, 10, 11])) == (2, 0)
    assert moved(impact.preview_replace(db_session, "PREVIEW", [5, 6, 10, 11, 12])) == (
        7,
        3,
    )  # 1-4, 7-9 leave
    api.segment("PREVIEW_RO", rollout_percent=100)
    fill(api, "PREVIEW_RO", [1])
    api.delete("/segments/PREVIEW_RO/members", {"user_ids": [2]})  # 2 excluded
    # 1 (explicit) and 3 (rollout) would leave; 2 is already out
    assert moved(impact.preview_remove(db_session, "PREVIEW_RO", [1, 2, 3])) == (2, 0)
    # 1 leaves (excluded from the rollout, as a removal); 2 (excluded) joins; 3 is in through the rollout
    assert moved(impact.preview_replace(db_session, "PREVIEW_RO", [2, 3])) == (1, 1)
    with pytest.raises(Exception) as info:
        impact.preview_replace(db_session, "PREVIEW", [1, 0])
    assert getattr(info.value, "status", None) == 422


def test_previews_agree_with_the_read_path_in_an_exclusion_group(api, db_session):
    api.segment("PREVIEW_GB", exclusion_group="PREVIEW_G")
    fill(api, "PREVIEW_GB", range(1, 51))  # explicit in B: A's rollout (made next) does not count for them
    api.segment("PREVIEW_GA", rollout_percent=50, exclusion_group="PREVIEW_G")
    users = range(1, 101)
    in_a = [u for u in users if any(s["slug"] == "PREVIEW_GA" for s in api.active(u))]
    assert in_a and not set(in_a) & set(range(1, 51))
    assert moved(impact.preview_remove(db_session, "PREVIEW_GA", list(users))) == (len(in_a), 0)
    outside_b = list(range(51, 101))  # a replace listing B's explicit members is refused (group_occupied)
    assert moved(impact.preview_replace(db_session, "PREVIEW_GA", outside_b)) == (0, 50 - len(in_a))


# -- background operations (more than 10,000 ids, or members leaving) ------------------------

BIG = 12_000


def load_members(slug, ids, expires_sql="NULL"):
    """Members loaded in one statement (the setup of a large segment)."""
    sql(
        f"INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
        f"SELECT g, s.id, now() - interval '1 day', {expires_sql} FROM unnest(CAST(:ids AS bigint[])) g, segments s "
        f"WHERE s.slug = :slug AND s.deleted_at IS NULL",
        ids=list(ids),
        slug=slug,
    )
    db.session.commit()


def operation_state(client, accepted):
    assert accepted.status_code == 202, accepted.json
    assert accepted.headers["Location"] == accepted.json["status_url"]
    return client.get(accepted.json["status_url"]).json


def test_a_large_bulk_remove_runs_on_the_worker(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "RM_BIG"})
    load_members("RM_BIG", range(1, 30_001))
    accepted = client.delete(
        "/api/v1/segments/RM_BIG/members", json={"user_ids": [*range(5_001, 25_001), 99_999]}
    )
    queued = operation_state(client, accepted)
    assert (queued["kind"], queued["status"], queued["total"]) == ("bulk_remove", "queued", 20_001)
    run_worker(redis_app, burst=True, fork=False)
    done = client.get(accepted.json["status_url"]).json
    assert (done["status"], done["progress"], done["removed"], done["done"]) == (
        "finished",
        100,
        20_000,
        20_001,
    )
    assert members("RM_BIG") == [*range(1, 5_001), *range(25_001, 30_001)]
    assert len(events("RM_BIG", "removed")) == 20_000
    assert [(kind, detail["count"]) for kind, detail, _ in activity("RM_BIG")] == [
        ("members_removed", 20_000)
    ]
    assert sql("SELECT count(*) FROM bulk_operation_ids").scalar() == 0


def test_a_large_bulk_replace_runs_both_passes_on_the_worker(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "REP_BIG"})
    load_members("REP_BIG", range(1, 15_001))
    listed = list(range(10_001, 22_001))
    accepted = client.put(
        "/api/v1/segments/REP_BIG/members",
        json={"user_ids": listed, "ttl_seconds": 86_400},
        headers={"X-Actor": "carol"},
    )
    queued = operation_state(client, accepted)
    assert (queued["kind"], queued["total"]) == ("bulk_replace", len(listed) + 15_000)
    run_worker(redis_app, burst=True, fork=False)
    done = client.get(accepted.json["status_url"]).json
    assert (done["status"], done["progress"], done["added"], done["updated"], done["removed"]) == (
        "finished",
        100,
        7_000,
        5_000,
        10_000,
    )
    assert members("REP_BIG") == listed
    (until,) = expiries("REP_BIG")
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    removed = events("REP_BIG", "removed")
    assert [u for u, _, _ in removed] == list(range(1, 10_001))
    assert {(reason, actor) for _, reason, actor in removed} == {("api", "api (X-Actor: carol)")}
    (entry,) = activity("REP_BIG")
    assert entry.kind == "members_replaced" and entry.actor == "api (X-Actor: carol)"
    assert {k: entry.detail[k] for k in ("count", "added", "updated", "removed", "unchanged")} == {
        "count": 12_000,
        "added": 7_000,
        "updated": 5_000,
        "removed": 10_000,
        "unchanged": 0,
    }


def test_a_short_list_replacing_many_members_runs_in_the_background(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "REP_FEW"})
    load_members("REP_FEW", range(1, 12_001))
    accepted = client.put("/api/v1/segments/REP_FEW/members", json={"user_ids": [3, 12_000, 50_000]})
    assert accepted.status_code == 202, accepted.json
    run_worker(redis_app, burst=True, fork=False)
    assert client.get(accepted.json["status_url"]).json["removed"] == 11_998
    assert members("REP_FEW") == [3, 12_000, 50_000]


def test_members_added_by_others_while_a_replace_runs_are_kept(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "REP_RACE"})
    load_members("REP_RACE", range(1, 12_001))
    accepted = client.put("/api/v1/segments/REP_RACE/members", json={"user_ids": [1, 2]})
    assert accepted.status_code == 202
    # after the operation started, another client adds a user the list does not name
    assert client.post("/api/v1/users/500000/segments", json={"add": ["REP_RACE"]}).status_code == 200
    run_worker(redis_app, burst=True, fork=False)
    assert members("REP_RACE") == [1, 2, 500_000]


def test_an_interrupted_replace_resumes_at_its_cursor_in_either_pass(redis_app, committed_db, monkeypatch):
    monkeypatch.setitem(redis_app.config, "BULK_CHUNK", 5_000)  # (the chunk counts below)
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "REP_RESUME"})
    load_members("REP_RESUME", range(1, 20_001, 2))  # 10,000 odd ids
    listed = list(range(10_001, 26_001))  # 16,000 ids: 4 chunks in the add pass
    operation_id = client.put("/api/v1/segments/REP_RESUME/members", json={"user_ids": listed}).json["id"]
    with redis_app.app_context():
        operation = bulk.get_operation(db.session, operation_id)
        for _ in range(5):  # the add pass (4 chunks), then the switch to the removal pass, then one window
            assert bulk.run_chunk(db.session, operation)
            db.session.commit()
        assert operation.phase == bulk.REMOVE_PASS and operation.cursor > 0
    run_worker(redis_app, burst=True, fork=False)  # the queued job goes on from the cursor
    with redis_app.app_context():
        operation = db.session.get(BulkOperation, operation.id)
        assert operation.status == "finished"
        assert members("REP_RESUME") == listed
        assert len(events("REP_RESUME", "removed")) == 5_000  # the odd ids below 10,001, once each
        assert len(events("REP_RESUME", "added")) == 16_000 - 5_000  # odd ids from 10,001 were members
        assert [kind for kind, _, _ in activity("REP_RESUME")] == ["members_replaced"]


def test_a_large_bulk_add_is_one_activity_entry_when_it_finishes(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "ADD_BIG_ACT"})
    accepted = client.post("/api/v1/segments/ADD_BIG_ACT/members", json={"user_ids": list(range(1, 10_002))})
    assert accepted.status_code == 202
    assert activity("ADD_BIG_ACT") == []  # not yet: recorded when it finishes
    run_worker(redis_app, burst=True, fork=False)
    ((kind, detail, _),) = activity("ADD_BIG_ACT")
    assert (kind, detail["count"], detail["background"]) == ("members_added", 10_001, True)
