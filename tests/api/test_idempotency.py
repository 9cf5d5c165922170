"""Idempotency-Key on real Redis: a success replays byte for byte, 422 on reuse, 409 in flight, a 4xx or
5xx leaves the key free, a read ignores it."""

import threading

import pytest
import sqlalchemy as sa

from webapp.platform.extensions import db


@pytest.fixture
def idem_app(redis_app, committed_db):
    return redis_app


def test_replay_is_byte_for_byte(idem_app):
    client = idem_app.test_client()
    first = client.post("/api/v1/segments", json={"slug": "IDEM"}, headers={"Idempotency-Key": "abc-1"})
    again = client.post("/api/v1/segments", json={"slug": "IDEM"}, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 201
    assert again.data == first.data and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    # Without the key, the same call is a real second attempt: 409.
    assert client.post("/api/v1/segments", json={"slug": "IDEM"}).status_code == 409


def test_a_replay_answers_with_the_writes_own_consistency_token(idem_app):
    """docs/api.md: a replayed idempotent write answers with its original Segments-Consistency
    (the write's position: a read sending it sees the write), not a newer one nor none."""
    client = idem_app.test_client()
    key = {"Idempotency-Key": "abc-token"}
    first = client.post("/api/v1/segments", json={"slug": "IDEM_TOKEN"}, headers=key)
    client.post("/api/v1/segments", json={"slug": "IDEM_LATER"})  # (the primary's position moves on)
    again = client.post("/api/v1/segments", json={"slug": "IDEM_TOKEN"}, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Segments-Consistency"] == first.headers["Segments-Consistency"]


def test_a_4xx_is_not_stored_so_the_fixed_request_executes(idem_app):
    """Writes are all-or-nothing: a refused request changed nothing and leaves its key free;
    once the cause is fixed (the segment exists), the same request with the same key runs."""
    client = idem_app.test_client()
    key = {"Idempotency-Key": "k2"}
    bad = client.post("/api/v1/users/1/segments", json={"add": ["LATER"]}, headers=key)
    again = client.post("/api/v1/users/1/segments", json={"add": ["LATER"]}, headers=key)
    assert bad.status_code == again.status_code == 422 and "Idempotent-Replayed" not in again.headers
    assert client.post("/api/v1/segments", json={"slug": "LATER"}).status_code == 201
    fixed = client.post("/api/v1/users/1/segments", json={"add": ["LATER"]}, headers=key)
    assert fixed.status_code == 200 and fixed.json["added"] == ["LATER"]
    replay = client.post("/api/v1/users/1/segments", json={"add": ["LATER"]}, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.data == fixed.data
    # The saved success is this client's: another client's same key runs for real.
    other = client.post(
        "/api/v1/users/1/segments",
        json={"add": ["LATER"]},
        headers=key,
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert other.status_code == 200 and "Idempotent-Replayed" not in other.headers
    assert other.json["unchanged"] == ["LATER"]


def test_a_key_on_a_read_is_ignored(idem_app):
    """The batch lookup is a POST but a read: with a key it still answers what is true now."""
    client = idem_app.test_client()
    client.post("/api/v1/segments", json={"slug": "READ_ME"})
    key = {"Idempotency-Key": "lookup-1"}
    before = client.post("/api/v1/users/segments:lookup", json={"user_ids": [5]}, headers=key)
    assert before.json["users"][0]["segments"] == []
    client.post("/api/v1/users/5/segments", json={"add": ["READ_ME"]})
    after = client.post("/api/v1/users/segments:lookup", json={"user_ids": [5]}, headers=key)
    assert "Idempotent-Replayed" not in after.headers
    assert [s["slug"] for s in after.json["users"][0]["segments"]] == ["READ_ME"]


def test_same_key_different_request_is_422(idem_app):
    client = idem_app.test_client()
    client.post("/api/v1/segments", json={"slug": "ONE"}, headers={"Idempotency-Key": "reuse"})
    response = client.post("/api/v1/segments", json={"slug": "TWO"}, headers={"Idempotency-Key": "reuse"})
    assert response.status_code == 422 and response.json["error"]["code"] == "idempotency_key_reused"
    other_path = client.post(
        "/api/v1/users/5/segments", json={"add": ["ONE"]}, headers={"Idempotency-Key": "reuse"}
    )
    assert other_path.status_code == 422


def test_invalid_key_is_400(idem_app):
    client = idem_app.test_client()
    response = client.post(
        "/api/v1/segments", json={"slug": "BADKEY"}, headers={"Idempotency-Key": "x" * 300}
    )
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_idempotency_key"


def test_concurrent_duplicates_have_one_side_effect(idem_app):
    client = idem_app.test_client()
    client.post("/api/v1/segments", json={"slug": "RACE_IDEM"})
    barrier = threading.Barrier(12)
    results = []

    def call():
        c = idem_app.test_client()
        barrier.wait()
        r = c.post(
            "/api/v1/reports", json={"user_id": 5, "period": "2025-01"}, headers={"Idempotency-Key": "dup"}
        )
        results.append((r.status_code, r.headers.get("Idempotent-Replayed"), r.data))

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    firsts = [r for r in results if r[0] == 202 and r[1] is None]
    assert len(firsts) == 1
    assert all(code == 409 or (code == 202 and body == firsts[0][2]) for code, _, body in results)
    with idem_app.app_context():
        assert db.session.scalar(sa.text("SELECT count(*) FROM reports")) == 1  # exactly one side effect


def test_a_5xx_is_not_stored(idem_app, monkeypatch):
    from webapp.services.segments import lifecycle as segments

    client = idem_app.test_client()
    monkeypatch.setattr(segments, "create_segment", lambda *a, **k: 1 / 0)
    failed = client.post("/api/v1/segments", json={"slug": "BOOM"}, headers={"Idempotency-Key": "five"})
    assert failed.status_code == 500 and failed.json["error"]["code"] == "internal_error"
    monkeypatch.undo()
    retried = client.post("/api/v1/segments", json={"slug": "BOOM"}, headers={"Idempotency-Key": "five"})
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers


def test_nothing_the_app_stores_in_redis_is_pickle(redis_app, redis_url):
    """Write access to Redis must not mean code execution: cache entries and jobs are JSON."""
    import json
    import zlib

    from redis import Redis

    from webapp.platform.queue import enqueue
    from webapp.services.reads.reach import cached

    with redis_app.test_request_context():
        assert cached("probe", "1", lambda: {"members": 3}, 30) == {"members": 3}
        assert cached("probe", "1", lambda: {"members": 4}, 30) == {"members": 3}  # from Redis
        job = enqueue("webapp.jobs.tasks.generate_report", "00000000-0000-0000-0000-000000000000")
    raw = Redis.from_url(redis_url)
    assert raw.get("segments:probe:1") == b'{"members": 3}'
    data = zlib.decompress(raw.hget(f"rq:job:{job.id}", "data"))  # (RQ compresses the payload)
    assert json.loads(data)[0] == "webapp.jobs.tasks.generate_report"  # JSON, not a pickle
