"""Active-segments cache on real Redis: read-after-write, invalidation, expiry cap, outage."""
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from webapp.extensions import cache, db
from webapp.services.segment_cache import cached_active_segments


def keys(redis_url):
    from redis import Redis

    return sorted(k.decode() for k in Redis.from_url(redis_url).keys("segments:*"))


def test_hits_are_served_from_redis_and_writes_invalidate(app_on, private_redis, committed_db):
    app = app_on(REDIS_URL=private_redis.url)
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "CACHED"})
    assert client.get("/api/v1/users/7/segments").json["segments"] == []
    assert "segments:segments:7" in keys(private_redis.url)
    # Prove the next read is a hit: change the database behind the cache's back.
    with app.app_context():
        seg_id = db.session.scalar(sa.text("SELECT id FROM segments WHERE slug = 'CACHED'"))
        db.session.execute(sa.text("INSERT INTO memberships VALUES (7, :s, now(), NULL)"), {"s": seg_id})
        db.session.commit()
    assert client.get("/api/v1/users/7/segments").json["segments"] == []  # cached
    # A write through the API invalidates that user: the next read is fresh.
    client.post("/api/v1/users/7/segments", json={"del": ["CACHED"]})
    assert client.get("/api/v1/users/7/segments").json["segments"] == []
    client.post("/api/v1/users/7/segments", json={"add": ["CACHED"]})
    assert [s["slug"] for s in client.get("/api/v1/users/7/segments").json["segments"]] == ["CACHED"]


def test_rollout_change_and_delete_invalidate_everyone(app_on, private_redis, committed_db):
    app = app_on(REDIS_URL=private_redis.url)
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "GLOBAL", "rollout_percent": 0})
    users = range(1, 60)
    assert all(client.get(f"/api/v1/users/{u}/segments").json["segments"] == [] for u in users)
    client.patch("/api/v1/segments/GLOBAL", json={"rollout_percent": 100})
    assert all(client.get(f"/api/v1/users/{u}/segments").json["segments"][0]["source"] == "rollout" for u in users)
    client.delete("/api/v1/segments/GLOBAL")
    assert all(client.get(f"/api/v1/users/{u}/segments").json["segments"] == [] for u in users)
    generations = [k for k in keys(private_redis.url) if k.startswith("segments:gen:")]
    assert generations == ["segments:gen:all"]  # one key for everyone: no scan, no per-user delete


def test_entry_never_outlives_its_earliest_expiry(app_on, private_redis, committed_db):
    app = app_on(REDIS_URL=private_redis.url)
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "SHORT"})
    client.post("/api/v1/users/3/segments", json={"add": [{"slug": "SHORT", "ttl_seconds": 30}]})
    assert client.get("/api/v1/users/3/segments").json["segments"]
    from redis import Redis

    redis = Redis.from_url(private_redis.url)
    key = "segments:segments:3"
    assert 0 < redis.ttl(key) <= 30  # not the default 300 s
    with app.app_context():
        later = datetime.now(UTC) + timedelta(seconds=31)
        assert cached_active_segments(db.session, 3, now=later) == []  # an expired hit is a miss


def test_redis_down_mid_test_serves_from_postgres(app_on, private_redis, committed_db, caplog):
    app = app_on(REDIS_URL=private_redis.url, RATELIMIT_ENABLED=True)
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "OUTAGE"})
    assert client.get("/api/v1/users/1/segments").status_code == 200
    private_redis.stop()
    caplog.clear()
    for _ in range(5):
        write = client.post("/api/v1/users/1/segments", json={"add": ["OUTAGE"]},
                            headers={"Idempotency-Key": "k-outage"})
        assert write.status_code == 200
        read = client.get("/api/v1/users/1/segments")
        assert read.status_code == 200 and read.json["segments"][0]["slug"] == "OUTAGE"
    cache_warnings = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(cache_warnings) == 1  # logged once, not per request
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["redis"]["ok"] is False
    assert ready.json["checks"]["database"]["ok"] is True
    private_redis.start()
    assert client.get("/readyz").status_code == 200


def test_embedded_cache_is_in_process(app, committed_db):
    with app.app_context():
        assert type(cache.cache).__name__ == "SimpleCache"
