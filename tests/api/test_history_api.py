from datetime import UTC, datetime, timedelta

from webapp.jobs.tasks import purge_expired
from webapp.services.history.replay import user_history
from webapp.services.membership.bulk import delete_segment
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.rollout import buckets as rollout
from webapp.services.segments.lifecycle import create_segment, update_segment

T0 = datetime(2030, 3, 1, tzinfo=UTC)


def replay(entries):
    """The membership state a history leads to: segment -> in?"""
    state = {}
    for e in entries:
        state[e.segment] = e.operation == "added"
    return {slug for slug, present in state.items() if present}


def test_history_records_api_changes_with_reasons(api):
    api.segment("H1")
    api.change(11, ["H1"], headers={"X-Actor": "alice"})
    api.change(11, [], ["H1"])
    items = api.get("/users/11/history").json["items"]
    assert [(i["operation"], i["reason"]) for i in items] == [("added", "api"), ("removed", "api")]
    assert items[0]["actor"] == "api (X-Actor: alice)" and items[0]["occurred_at"].endswith("Z")
    assert items[1]["actor"] == "api"


def test_history_period_is_half_open(db_session):
    create_segment(db_session, "P1", now=T0)
    change_user_segments(db_session, 12, [AddSpec("P1")], now=T0 + timedelta(days=1))
    change_user_segments(db_session, 12, [], ["P1"], now=T0 + timedelta(days=40))
    march = user_history(db_session, 12, T0, T0.replace(month=4), now=T0 + timedelta(days=60))
    april = user_history(
        db_session, 12, T0.replace(month=4), T0.replace(month=5), now=T0 + timedelta(days=60)
    )
    assert [e.operation for e in march] == ["added"]
    assert [e.operation for e in april] == ["removed"]


def test_ttl_expiry_is_recorded_at_the_true_expiry_time(db_session):
    create_segment(db_session, "TTLH", now=T0)
    until = T0 + timedelta(hours=2)
    change_user_segments(db_session, 13, [AddSpec("TTLH", expires_at=until)], now=T0)
    # Before the purge, history already shows the expiry ...
    before = user_history(db_session, 13, now=T0 + timedelta(days=1))
    assert [(e.operation, e.reason, e.occurred_at) for e in before][-1] == ("removed", "ttl", until)
    # ... and the purge writes exactly that row.
    assert purge_expired(now=T0 + timedelta(days=1)) == 1
    after = user_history(db_session, 13, now=T0 + timedelta(days=1))
    assert after == before


def test_rollout_changes_are_replayed_per_user(db_session):
    seg = create_segment(db_session, "ROLLH", rollout_percent=10, now=T0)
    users = range(1, 3000)
    band = [u for u in users if 1000 <= rollout.bucket(seg.salt, u) < 2000]
    first = [u for u in users if rollout.bucket(seg.salt, u) < 1000]
    update_segment(db_session, "ROLLH", rollout_percent=20, now=T0 + timedelta(days=1))
    update_segment(db_session, "ROLLH", rollout_percent=5, now=T0 + timedelta(days=2))
    now = T0 + timedelta(days=3)
    h = user_history(db_session, band[0], now=now)
    assert [(e.operation, e.reason, e.occurred_at) for e in h] == [
        ("added", "rollout", T0 + timedelta(days=1)),
        ("removed", "rollout", T0 + timedelta(days=2)),
    ]
    early = [u for u in first if rollout.bucket(seg.salt, u) < 500][0]
    assert [e.operation for e in user_history(db_session, early, now=now)] == ["added"]


def test_history_replays_to_the_current_state(db_session):
    """Mixed explicit, rollout, exclusion, TTL and deletion: replay == active segments."""
    from webapp.services.reads.path import active_segments

    seg = create_segment(db_session, "MIX", rollout_percent=50, now=T0)
    create_segment(db_session, "PLAIN", now=T0)
    user = next(u for u in range(1, 1000) if rollout.bucket(seg.salt, u) < 5000)
    t = T0
    steps = [
        lambda now: change_user_segments(
            db_session, user, [AddSpec("MIX", ttl_seconds=60), AddSpec("PLAIN")], now=now
        ),
        lambda now: None,  # TTL passes: still in through the rollout
        lambda now: change_user_segments(db_session, user, [], ["MIX"], now=now),  # excluded
        lambda now: update_segment(db_session, "MIX", rollout_percent=100, now=now),
        lambda now: change_user_segments(db_session, user, [AddSpec("MIX")], now=now),
        lambda now: delete_segment(db_session, "PLAIN", now=now),
    ]
    for step in steps:
        t += timedelta(hours=1)
        step(t)
        history = user_history(db_session, user, now=t)
        assert replay(history) == {a.slug for a in active_segments(db_session, user, now=t)}, history


def test_history_api_validates_bounds(api):
    assert api.get("/users/1/history?from=2030-02-01&to=2030-01-01").status_code == 422
    assert api.get("/users/1/history?from=yesterday").status_code == 422
    assert api.get("/users/0/history").status_code == 422
    ok = api.get("/users/1/history?from=2030-01-01&to=2030-02-01T00:00:00Z")
    assert ok.status_code == 200 and ok.json["from"] == "2030-01-01T00:00:00Z"
