"""Scheduled rollout changes: exact to the second at read time whether or not the job has
run, in user histories and the segment activity at their time with the scheduler as actor."""

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time

from webapp.jobs.tasks import apply_scheduled_rollouts
from webapp.models import RolloutChange, Segment
from webapp.platform.extensions import db
from webapp.services.reads.path import hot_read
from webapp.services.rollout import buckets as rollout

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)  # a Monday
USERS = range(1, 4001)


def iso(value):
    return value.isoformat().replace("+00:00", "Z")


def share(api, slug):
    """How many of USERS are in ``slug`` now, through the batch lookup."""
    count = 0
    for start in range(0, len(USERS), 1000):
        body = api.post("/users/segments:lookup", {"user_ids": list(USERS[start : start + 1000])}).json
        count += sum(any(s["slug"] == slug for s in u["segments"]) for u in body["users"])
    return count


def test_a_plan_applies_to_the_second_without_any_job(api):
    with freeze_time(T0):
        api.segment("PLAN")
        monday, wednesday, friday = (
            T0 + timedelta(hours=1),
            T0 + timedelta(days=2),
            T0 + timedelta(days=4, hours=9),
        )
        for at, percent in ((monday, 5), (wednesday, 20), (friday, 0)):
            created = api.post(
                "/segments/PLAN/schedule",
                {"at": iso(at), "rollout_percent": percent},
                headers={"X-Actor": "pm@example.com"},
            )
            assert created.status_code == 201, created.json
            assert (
                created.json["status"] == "pending"
                and created.json["created_by"] == "api (X-Actor: pm@example.com)"
            )
        listed = api.get("/segments/PLAN/schedule").json["items"]
        assert [(i["rollout_percent"], i["status"]) for i in listed] == [
            (5, "pending"),
            (20, "pending"),
            (0, "pending"),
        ]
    with freeze_time(monday - timedelta(microseconds=1)):
        assert share(api, "PLAN") == 0
    with freeze_time(monday):
        assert 140 < share(api, "PLAN") < 260  # 5% of 4,000
        assert api.get("/segments/PLAN").json["rollout_percent"] == 5  # applied on the first write-side read
    with freeze_time(wednesday + timedelta(seconds=1)):
        twenty = share(api, "PLAN")
        assert 700 < twenty < 900
    with freeze_time(friday):
        assert share(api, "PLAN") == 0
        statuses = [i["status"] for i in api.get("/segments/PLAN/schedule").json["items"]]
        assert statuses == ["applied", "applied", "applied"]


def test_history_and_activity_show_each_change_at_its_time_with_its_scheduler(api):
    with freeze_time(T0):
        api.segment("PLANNED_HISTORY")
        salt = db.session.query(Segment.salt).filter_by(slug="PLANNED_HISTORY").scalar()
        user = next(u for u in USERS if rollout.bucket(salt, u) < 1000)
        at = T0 + timedelta(hours=5)
        api.post(
            "/segments/PLANNED_HISTORY/schedule",
            {"at": iso(at), "rollout_percent": 10},
            headers={"X-Actor": "alice"},
        )
    with freeze_time(at + timedelta(minutes=3)):  # no job has run
        items = api.get(f"/users/{user}/history").json["items"]
        assert [(i["segment"], i["operation"], i["occurred_at"], i["actor"]) for i in items] == [
            ("PLANNED_HISTORY", "added", iso(at), "api (X-Actor: alice)")
        ]
        activity = api.get("/segments/PLANNED_HISTORY/activity").json["items"]
        assert activity[0]["kind"] == "rollout_changed" and activity[0]["occurred_at"] == iso(at)
        assert activity[0]["detail"]["scheduled"] is True and activity[0]["actor"] == "api (X-Actor: alice)"
        assert {e["kind"] for e in activity} >= {"created", "schedule_added"}


def test_the_job_applies_due_changes_at_their_scheduled_time(api):
    with freeze_time(T0):
        api.segment("PLAN_JOB")
        at = T0 + timedelta(minutes=10)
        api.post("/segments/PLAN_JOB/schedule", {"at": iso(at), "rollout_percent": 30})
    assert apply_scheduled_rollouts(now=at - timedelta(seconds=1)) == 0
    assert apply_scheduled_rollouts(now=at + timedelta(seconds=20)) == 1
    change = db.session.query(RolloutChange).join(Segment).filter(Segment.slug == "PLAN_JOB").one()
    assert (change.from_bp, change.to_bp, change.changed_at) == (0, 3000, at)
    assert apply_scheduled_rollouts(now=at + timedelta(seconds=80)) == 0


def test_cancel_validation_and_group_room(api):
    with freeze_time(T0):
        api.segment("PLAN_C", exclusion_group="PLANS", rollout_percent=50)
        api.segment("PLAN_D", exclusion_group="PLANS", rollout_percent=30)
        at = iso(T0 + timedelta(days=1))
        too_much = api.post("/segments/PLAN_D/schedule", {"at": at, "rollout_percent": 60})
        assert (
            too_much.status_code == 422 and too_much.json["error"]["details"][0]["exclusion_group"] == "PLANS"
        )
        ok = api.post("/segments/PLAN_D/schedule", {"at": at, "rollout_percent": 50})
        assert ok.status_code == 201
        # Raising PLAN_C now would starve the planned change: refused, naming it.
        starved = api.patch("/segments/PLAN_C", {"rollout_percent": 60})
        assert starved.status_code == 422 and "PLAN_D" in starved.json["error"]["message"]
        for body in (
            {"at": iso(T0 - timedelta(seconds=1)), "rollout_percent": 5},
            {"at": "2031-03-04T10:00:00", "rollout_percent": 5},
            {"at": iso(T0 + timedelta(days=400)), "rollout_percent": 5},
            {"at": at, "rollout_percent": 101},
        ):
            assert api.post("/segments/PLAN_D/schedule", body).status_code == 422, body
        assert api.post("/segments/NOPE/schedule", {"at": at, "rollout_percent": 5}).status_code == 404
        cancelled = api.delete(f"/segments/PLAN_D/schedule/{ok.json['id']}")
        assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
        assert api.patch("/segments/PLAN_C", {"rollout_percent": 60}).status_code == 200
        assert api.delete("/segments/PLAN_D/schedule/999999").status_code == 404
        late = api.post(
            "/segments/PLAN_D/schedule", {"at": iso(T0 + timedelta(hours=1)), "rollout_percent": 10}
        )
    with freeze_time(T0 + timedelta(hours=2)):
        assert (
            api.delete(f"/segments/PLAN_D/schedule/{late.json['id']}").status_code == 409
        )  # already in force


def test_a_kept_catalog_never_outlives_the_next_change(app_on, redis_app, committed_db):
    app = app_on()
    client = app.test_client()
    now = datetime.now(UTC)
    client.post("/api/v1/segments", json={"slug": "PLAN_HOT"})
    at = now + timedelta(seconds=30)
    assert (
        client.post(
            "/api/v1/segments/PLAN_HOT/schedule", json={"at": iso(at), "rollout_percent": 100}
        ).status_code
        == 201
    )
    with app.app_context():
        engine = app.extensions["read_engine"]
        assert hot_read(engine, 77, now=at - timedelta(microseconds=1)) == []  # the catalog is now kept
        assert [a.slug for a in hot_read(engine, 77, now=at)] == ["PLAN_HOT"]  # same catalog, no write since
