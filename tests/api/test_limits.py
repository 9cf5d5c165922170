"""Rate limits on real Redis: per client, reads and writes separately, JSON 429, fallback."""

import pytest


@pytest.fixture
def limited(app_on, redis_app, committed_db):
    return app_on(
        RATELIMIT_ENABLED=True,
        RATELIMIT_READ="5/hour",
        RATELIMIT_WRITE="2/hour",
        API_TOKENS="svc-a:token-a-0123456789abcdef,svc-b:token-b-0123456789abcdef",
    )


TOKENS = {"tok-a": "token-a-0123456789abcdef", "tok-b": "token-b-0123456789abcdef"}


def auth(token):
    return {"Authorization": f"Bearer {TOKENS.get(token, token)}"}


def test_reads_are_limited_per_token_with_headers(limited):
    client = limited.test_client()
    responses = [client.get("/api/v1/segments", headers=auth("tok-a")) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[0].headers["RateLimit-Remaining"] == "4" and "Retry-After" not in responses[0].headers
    blocked = client.get("/api/v1/segments", headers=auth("tok-a"))
    assert blocked.json["error"]["code"] == "rate_limited"
    assert int(blocked.headers["Retry-After"]) > 0
    assert blocked.headers["RateLimit-Limit"] == "5" and blocked.headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Reset" in blocked.headers
    # Another client (token) has its own budget; so do writes.
    assert client.get("/api/v1/segments", headers=auth("tok-b")).status_code == 200
    assert client.post("/api/v1/segments", json={"slug": "W1"}, headers=auth("tok-a")).status_code == 201


def test_writes_have_their_own_limit(limited):
    client = limited.test_client()
    codes = [
        client.post("/api/v1/segments", json={"slug": f"W{i}"}, headers=auth("tok-a")).status_code
        for i in range(3)
    ]
    assert codes == [201, 201, 429]
    assert client.get("/api/v1/users/1/segments", headers=auth("tok-a")).status_code == 200


def test_unknown_or_missing_token_is_401(limited):
    client = limited.test_client()
    assert client.get("/api/v1/segments").status_code == 401
    response = client.get("/api/v1/segments", headers=auth("nope"))
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_token_name_is_the_history_actor(limited):
    client = limited.test_client()
    client.post("/api/v1/segments", json={"slug": "ACTOR"}, headers=auth("tok-a"))
    client.post("/api/v1/users/4/segments", json={"add": ["ACTOR"]}, headers=auth("tok-b"))
    client.post(
        "/api/v1/users/4/segments", json={"del": ["ACTOR"]}, headers={**auth("tok-b"), "X-Actor": "svc-a"}
    )
    items = client.get("/api/v1/users/4/history", headers=auth("tok-b")).json["items"]
    assert [i["actor"] for i in items] == [
        "svc-b",
        "svc-b (X-Actor: svc-a)",
    ]  # a header never replaces the token


def test_hot_path_is_not_limited_by_default(app_on, redis_app, committed_db):
    app = app_on(RATELIMIT_ENABLED=True, RATELIMIT_READ="2/hour")
    client = app.test_client()
    hot = [client.get("/api/v1/users/1/segments") for _ in range(5)]
    assert {r.status_code for r in hot} == {200} and "RateLimit-Limit" not in hot[0].headers
    assert [client.get("/api/v1/segments").status_code for _ in range(3)] == [200, 200, 429]


def test_hot_path_limit_when_configured(app_on, redis_app, committed_db):
    app = app_on(RATELIMIT_ENABLED=True, RATELIMIT_HOT_PATH="3/hour")
    client = app.test_client()
    assert [client.get("/api/v1/users/1/segments").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert {client.get("/api/v1/segments").status_code for _ in range(5)} == {
        200
    }  # other reads: no limit set


def test_in_memory_fallback_when_redis_is_down(app_on, private_redis, committed_db):
    app = app_on(REDIS_URL=private_redis.url, RATELIMIT_ENABLED=True, RATELIMIT_READ="3/hour")
    client = app.test_client()
    assert client.get("/api/v1/segments").status_code == 200
    private_redis.stop()
    codes = [client.get("/api/v1/segments").status_code for _ in range(5)]
    assert 500 not in codes and codes[0] == 200 and 429 in codes  # still limited, from memory


def test_report_creation_is_limited_and_identical_pending_requests_share_one(app_on, redis_app, committed_db):
    app = app_on(RATELIMIT_ENABLED=True, RATELIMIT_REPORTS="3/hour")
    client = app.test_client()
    same = [client.post("/api/v1/reports", json={"period": "2026-01"}).json["id"] for _ in range(2)]
    assert same[0] == same[1]  # still queued: the second request is the first one
    other = client.post("/api/v1/reports", json={"period": "2026-02"})
    assert other.status_code == 202 and other.json["id"] != same[0]
    limited = client.post("/api/v1/reports", json={"period": "2026-03"})
    assert limited.status_code == 429 and limited.json["error"]["code"] == "rate_limited"


def test_the_batch_lookup_is_a_hot_read_not_a_write(app_on, redis_app, committed_db):
    """A POST, but the hot path's question for many users: no write budget, no limit by
    default, the hot path's budget when one is set."""
    body = {"user_ids": [1, 2, 3]}
    client = app_on(RATELIMIT_ENABLED=True, RATELIMIT_WRITE="2/hour", RATELIMIT_READ="2/hour").test_client()
    lookups = [client.post("/api/v1/users/segments:lookup", json=body) for _ in range(5)]
    assert {r.status_code for r in lookups} == {200} and "RateLimit-Limit" not in lookups[0].headers
    assert [client.post("/api/v1/segments", json={"slug": f"L{i}"}).status_code for i in range(3)] == [
        201,
        201,
        429,
    ]
    hot = app_on(RATELIMIT_ENABLED=True, RATELIMIT_HOT_PATH="3/hour").test_client()
    assert [hot.post("/api/v1/users/segments:lookup", json=body).status_code for _ in range(2)] == [200, 200]
    assert hot.get("/api/v1/users/1/segments").status_code == 200  # one shared hot-path budget
    assert hot.post("/api/v1/users/segments:lookup", json=body).status_code == 429
