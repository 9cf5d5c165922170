"""Restoring a deleted segment (issue 24, item 7): the same segment back with its members (TTLs
that have not expired), its exclusions and its rollout, recorded as ``restored``; refused when
the slug is taken, the window has passed or the deletion is still running; at 0% when its group
has no room. Reads, the batch lookup and the history replay agree throughout."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from tests.support.oracle import replay
from webapp.errors import Conflict
from webapp.models import Segment
from webapp.platform.extensions import db
from webapp.services import restore
from webapp.services.membership import bulk

USERS = list(range(1, 401))


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def answers(api, users=USERS) -> dict[int, frozenset[str]]:
    """Every user's segments by the batch lookup, checked against the single read and the
    history replay."""
    body = api.post("/users/segments:lookup", {"user_ids": list(users)}).json
    looked = {u["user_id"]: frozenset(s["slug"] for s in u["segments"]) for u in body["users"]}
    for user_id in users:
        single = frozenset(s["slug"] for s in api.active(user_id))
        entries = api.get(f"/users/{user_id}/history").json["items"]
        replayed = replay((e["segment"], e["operation"]) for e in entries)
        assert single == looked[user_id] == replayed, (user_id, single, looked[user_id], replayed, entries)
    return looked


def test_restore_brings_back_members_exclusions_and_rollout_as_history_says(api):
    api.segment("BACK", rollout_percent=30, description="voice messages")
    # explicit members: for good, for a day, for 2 seconds (expires while deleted)
    assert api.post("/segments/BACK/members", {"user_ids": [1, 2, 3]}).status_code == 200
    assert api.post("/segments/BACK/members", {"user_ids": [4], "ttl_seconds": 86400}).status_code == 200
    four_expires = api.get("/segments/BACK/members").json["items"][3]["expires_at"]
    covered = sorted(u for u, slugs in answers(api).items() if "BACK" in slugs and u > 5)
    excluded = covered[:3]  # rollout members removed: exclusions
    for user_id in excluded:
        assert api.change(user_id, delete=["BACK"]).status_code == 200
    before = answers(api)
    salt = db.session.scalar(db.select(Segment.salt).where(Segment.slug == "BACK"))
    assert api.post("/segments/BACK/members", {"user_ids": [5], "ttl_seconds": 2}).status_code == 200

    deleted = api.delete("/segments/BACK", headers={"X-Actor": "pm@example.com"})
    assert deleted.status_code == 200 and deleted.json["members_removed"] == 5
    assert all("BACK" not in slugs for slugs in answers(api).values())
    seen = api.get("/segments/BACK/deleted").json
    assert seen["deleted_by"] == "api (X-Actor: pm@example.com)"
    assert seen["rollout_percent"] == 30 and seen["kept_members"] == 5
    assert seen["excluded_count"] == 3 and seen["problem"] is None and seen["restorable"]
    assert seen["activity"][0]["kind"] == "deleted"
    time.sleep(2.1)  # user 5's TTL passes while the segment is deleted; user 4's day does not

    restored = api.post("/segments/BACK/restore", headers={"X-Actor": "pm@example.com"})
    assert restored.status_code == 200, restored.json
    body = restored.json
    assert body["members_restored"] == 4 and body["expired_while_deleted"] == 1
    assert body["rollout_percent"] == 30 and not body["restored_at_zero"]
    assert body["segment"]["description"] == "voice messages"
    after = answers(api)
    assert after == before  # (user 5 as before its add) same salt: the same rollout members; exclusions hold
    assert db.session.scalar(db.select(Segment.salt).where(Segment.slug == "BACK")) == salt
    members = {m["user_id"]: m["expires_at"] for m in api.get("/segments/BACK/members").json["items"]}
    assert members == {1: None, 2: None, 3: None, 4: four_expires}
    history = api.get("/users/1/history").json["items"]
    assert [(e["operation"], e["reason"]) for e in history][-2:] == [  # (first: api, or rollout if covered)
        ("removed", "segment_deleted"),
        ("added", "restored"),
    ]
    assert history[-1]["actor"] == "api (X-Actor: pm@example.com)"
    rollout_member = next(u for u in covered if u not in excluded)
    last = api.get(f"/users/{rollout_member}/history").json["items"][-1]
    assert (last["operation"], last["reason"], last["cause"]["kind"]) == ("added", "restored", "restored")
    activity = api.get("/segments/BACK/activity").json["items"]
    assert activity[0]["kind"] == "restored" and activity[0]["detail"]["expired"] == 1
    again = api.post("/segments/BACK/restore")
    assert again.status_code == 404 and again.json["error"]["details"][0]["code"] == "no_deleted_segment"


def test_restore_is_refused_when_the_slug_was_taken_again(api):
    api.segment("TAKEN")
    api.post("/segments/TAKEN/members", {"user_ids": [1, 2]})
    api.delete("/segments/TAKEN")
    created = api.segment("TAKEN", description="the new one")
    refused = api.post("/segments/TAKEN/restore")
    assert refused.status_code == 409
    problem = refused.json["error"]["details"][0]
    assert problem["code"] == "slug_taken_since" and problem["segment"] == "TAKEN"
    assert problem["created_at"] == created["created_at"]
    assert api.get("/segments/TAKEN").json["description"] == "the new one"
    assert api.get("/segments/TAKEN/deleted").json["problem"] == "slug_taken_since"
    answers(api, [1, 2])


def test_restore_window_is_thirty_days_by_default_and_configurable(api, app, db_session):
    api.segment("LATE")
    api.post("/segments/LATE/members", {"user_ids": [7]})
    bulk.delete_segment(db.session, "LATE", "ann")
    db.session.commit()  # (the test's savepoint: a refused request below rolls back to here)
    segment = restore.find_deleted(db.session, "LATE")
    at = segment.deleted_at
    assert at is not None
    with pytest.raises(Conflict) as refused:
        restore.restore_segment(db.session, "LATE", now=at + timedelta(days=30))
    problem = refused.value.details[0]
    assert problem["code"] == "restore_expired" and problem["restorable_until"] == iso(
        at + timedelta(days=30)
    )
    assert restore.describe(db.session, segment, now=at + timedelta(days=30)).problem == "restore_expired"
    assert restore.describe(db.session, segment, days=31, now=at + timedelta(days=30)).problem is None
    with pytest.raises(Conflict):
        restore.restore_segment(db.session, "LATE", days=29, now=at + timedelta(days=29, hours=23))
    app.config["RESTORE_DAYS"] = 0  # the API reads the setting
    try:
        answer = api.post("/segments/LATE/restore")
        assert answer.status_code == 409 and answer.json["error"]["details"][0]["code"] == "restore_expired"
        seen = api.get("/segments/LATE/deleted")
        assert seen.json.get("problem") == "restore_expired", seen.json
    finally:
        app.config["RESTORE_DAYS"] = 30
    result = restore.restore_segment(
        db.session, "LATE", now=at + timedelta(days=30) - timedelta(microseconds=1)
    )
    assert result.members == 1 and result.segment.deleted_at is None


def test_a_full_group_restores_the_segment_at_zero(api):
    api.segment("G_ONE", exclusion_group="FULLG", rollout_percent=40)
    api.segment("G_TWO", exclusion_group="FULLG", rollout_percent=50)
    member = next(  # a user G_TWO's rollout does not hold (the group's salt is random)
        u for u in range(1, 100) if api.post("/segments/G_ONE/members", {"user_ids": [u]}).status_code == 200
    )
    api.delete("/segments/G_ONE")
    assert api.patch("/segments/G_TWO", {"rollout_percent": 80}).status_code == 200
    restored = api.post("/segments/G_ONE/restore")
    assert restored.status_code == 200, restored.json
    assert restored.json["restored_at_zero"] and restored.json["wanted_percent"] == 40
    assert restored.json["segment"]["exclusion_group"] == "FULLG"
    assert restored.json["segment"]["rollout_percent"] == 0
    assert restored.json["members_restored"] == 1
    assert "G_ONE" in {s["slug"] for s in api.active(member)}
    answers(api)
    assert api.get("/segments/G_ONE/activity").json["items"][0]["detail"]["wanted_percent"] == 40


def test_a_kept_member_now_explicit_in_the_group_refuses_the_restore(api):
    api.segment("O_ONE", exclusion_group="OVG")
    api.segment("O_TWO", exclusion_group="OVG")
    api.post("/segments/O_ONE/members", {"user_ids": [8, 9]})
    api.delete("/segments/O_ONE")
    api.post("/segments/O_TWO/members", {"user_ids": [9]})
    refused = api.post("/segments/O_ONE/restore")
    assert refused.status_code == 409
    problem = refused.json["error"]["details"][0]
    assert (problem["code"], problem["segment"], problem["users"]) == ("group_overlap", "O_TWO", 1)
    answers(api, [8, 9])


def test_a_restore_cannot_start_while_the_deletion_runs_and_a_large_one_runs_in_the_background(
    api, db_session, monkeypatch
):
    api.segment("BIG", rollout_percent=10)
    api.post("/segments/BIG/members", {"user_ids": [11, 12, 13, 14, 15]})
    monkeypatch.setattr(bulk, "SYNC_LIMIT", 3)
    monkeypatch.setattr(bulk, "CHUNK", 2)
    deleting = api.delete("/segments/BIG")
    assert deleting.json["operation_url"]
    assert api.post("/segments/BIG/restore").json["error"]["details"][0]["code"] == "deletion_in_progress"
    operation = bulk.get_operation(db.session, deleting.json["operation_url"].rsplit("/", 1)[1])
    while bulk.run_chunk(db.session, operation):
        pass
    bulk.finish(db.session, operation)
    restored = api.post("/segments/BIG/restore")
    assert restored.status_code == 200 and restored.json["operation_url"]
    assert restored.json["members_restored"] == 5
    answers(api, range(1, 30))  # nobody back yet: reads and history agree
    refused = api.delete("/segments/BIG")
    assert refused.status_code == 409
    assert refused.json["error"]["details"][0]["code"] == "restore_in_progress"
    operation = bulk.get_operation(db.session, restored.json["operation_url"].rsplit("/", 1)[1])
    assert bulk.run_chunk(db.session, operation)  # 11, 12 back
    answers(api, range(1, 30))
    while bulk.run_chunk(db.session, operation):
        pass
    bulk.finish(db.session, operation)
    assert {m["user_id"] for m in api.get("/segments/BIG/members").json["items"]} == {11, 12, 13, 14, 15}
    answers(api, range(1, 30))


def test_describe_says_who_deleted(api, db_session):
    api.segment("WHO", rollout_percent=5)
    api.delete("/segments/WHO", headers={"X-Actor": "ann"})
    seen = restore.describe(db.session, restore.find_deleted(db.session, "WHO"))
    assert seen.deleted_by == "api (X-Actor: ann)" and seen.rollout_percent == 5
    assert seen.restorable_until == seen.deleted_at + timedelta(days=30) and seen.problem is None


def test_the_nightly_purge_drops_what_a_deletion_kept_once_the_window_has_passed(api, app, db_session):
    from webapp.jobs import tasks
    from webapp.models import RetiredMembership, RolloutExclusion

    api.segment("PURGED", rollout_percent=100)
    api.post("/segments/PURGED/members", {"user_ids": [1, 2]})
    api.change(3, delete=["PURGED"])  # an exclusion
    api.delete("/segments/PURGED")
    segment = restore.find_deleted(db.session, "PURGED")
    assert segment.deleted_at is not None

    def kept() -> tuple[int, int]:
        rows = db.session.scalars(
            db.select(RetiredMembership).where(RetiredMembership.segment_id == segment.id)
        )
        excl = db.session.scalars(
            db.select(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id)
        )
        return len(rows.all()), len(excl.all())

    assert kept() == (2, 1)
    assert tasks.purge_restorable(segment.deleted_at + timedelta(days=29)) == 0
    assert kept() == (2, 1)
    assert tasks.purge_restorable(segment.deleted_at + timedelta(days=30, seconds=1)) >= 3
    db.session.refresh(segment)
    assert kept() == (0, 0) and not segment.restorable
    assert restore.describe(db.session, segment).problem in ("restore_expired", "not_restorable")
