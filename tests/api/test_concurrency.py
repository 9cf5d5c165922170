"""Concurrent writers against real PostgreSQL (real commits, one connection per thread)."""

import random
import threading

import sqlalchemy as sa

from tests.support.threads import in_threads
from webapp.platform.extensions import db


def run_threads(app, count, work):
    """``work(i, client)`` in ``count`` threads started together, each with a client (and so a
    database connection) of its own; their answers in order."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def runner(i):
        client = app.test_client()
        barrier.wait()
        results[i] = work(i, client)

    in_threads(count, runner, timeout=60)
    return results


def test_fifty_writers_on_one_user_and_segment(app, committed_db):
    client = app.test_client()
    assert client.post("/api/v1/segments", json={"slug": "RACE"}).status_code == 201
    rng = random.Random(7)
    plan = [rng.choice(["add", "del"]) for _ in range(50)]

    def work(i, c):
        body = {"add": ["RACE"], "del": []} if plan[i] == "add" else {"add": [], "del": ["RACE"]}
        if plan[i] == "add" and i % 3 == 0:
            body["ttl_seconds"] = 3600 + i
        response = c.post("/api/v1/users/42/segments", json=body)
        return response.status_code

    statuses = run_threads(app, 50, work)
    assert statuses == [200] * 50
    with db.engine.connect() as conn:
        rows = conn.scalar(sa.text("SELECT count(*) FROM memberships WHERE user_id = 42"))
        events = (
            conn.execute(
                sa.text("SELECT action FROM membership_events WHERE user_id = 42 ORDER BY occurred_at, id")
            )
            .scalars()
            .all()
        )
    assert rows in (0, 1)
    assert events, "at least one change happened"
    # Every event is a real change, so the history alternates and ends in the final state.
    assert all(a != b for a, b in zip(events, events[1:], strict=False)), events
    assert events[0] == "added"
    assert (events[-1] == "added") == (rows == 1)
    active = client.get("/api/v1/users/42/segments").json["segments"]
    assert [s["slug"] for s in active] == (["RACE"] if rows else [])


def test_concurrent_creates_of_one_slug(app, committed_db):
    statuses = run_threads(
        app, 20, lambda i, c: c.post("/api/v1/segments", json={"slug": "ONCE"}).status_code
    )
    assert sorted(statuses) == [201] + [409] * 19


def test_delete_races_with_adds(app, committed_db):
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "DOOMED"})

    def work(i, c):
        if i == 0:
            return c.delete("/api/v1/segments/DOOMED").status_code
        return c.post(f"/api/v1/users/{1000 + i}/segments", json={"add": ["DOOMED"]}).status_code

    statuses = run_threads(app, 30, work)
    assert statuses[0] == 200 and set(statuses[1:]) <= {200, 422}
    with db.engine.connect() as conn:
        left = conn.scalar(sa.text("SELECT count(*) FROM memberships"))
        added = conn.scalar(sa.text("SELECT count(*) FROM membership_events WHERE action = 'added'"))
        removed = conn.scalar(sa.text("SELECT count(*) FROM membership_events WHERE action = 'removed'"))
    # No membership survives its segment, and every add that happened was undone by the delete.
    assert left == 0 and added == removed == statuses[1:].count(200)
