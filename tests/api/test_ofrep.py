"""OpenFeature's remote evaluation protocol (OFREP, webapp/api/ofrep.py, services/reads/ofrep.py): the
answers equal the hot read's, its reasons and errors in the protocol's own format, tokens as
Bearer or X-API-Key, ETag and 304, and the layer in front of Flask answering the single
evaluation exactly as Flask does."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from webapp.services.reads import ofrep
from webapp.services.reads.path import Reader

TOKENS = "svc:token-0123456789abcdef:read,ops:token-fedcba9876543210"
READ_TOKEN = "token-0123456789abcdef"
FLAG = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


def evaluate(client, key, user="7", **kwargs):
    return client.post(FLAG.format(key), json={"context": {"targetingKey": user}}, **kwargs)


@pytest.fixture
def flags(api):
    api.post("/segments", {"slug": "OF_EXPLICIT"})
    api.post("/segments", {"slug": "OF_ROLLOUT", "rollout_percent": 100})
    api.post("/segments", {"slug": "OF_NONE"})
    api.post("/users/7/segments", {"add": [{"slug": "OF_EXPLICIT", "ttl_seconds": 3600}]})
    return api


def test_values_reasons_variants_and_metadata(flags, client):
    explicit = evaluate(client, "OF_EXPLICIT").json
    until = flags.get("/users/7/segments").json["segments"][0]["expires_at"]
    assert explicit == {
        "key": "OF_EXPLICIT",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "metadata": {"source": "explicit", "expires_at": until},
    }
    assert evaluate(client, "OF_ROLLOUT").json == {
        "key": "OF_ROLLOUT",
        "value": True,
        "reason": "SPLIT",
        "variant": "on",
        "metadata": {"source": "rollout"},
    }
    none = client.post(
        FLAG.format("OF_NONE"), json={"context": {"targetingKey": "7", "email": "a@b.c", "plan": {"x": 1}}}
    )
    assert none.status_code == 200 and none.json == {
        "key": "OF_NONE",
        "value": False,
        "reason": "DEFAULT",
        "variant": "off",
        "metadata": {},
    }


def test_errors_in_the_protocols_format(flags, client):
    missing = evaluate(client, "NO_SUCH_FLAG")
    assert missing.status_code == 404 and missing.json["errorCode"] == "FLAG_NOT_FOUND"
    assert missing.json["key"] == "NO_SUCH_FLAG" and "NO_SUCH_FLAG" in missing.json["errorDetails"]
    for odd_key in ("not a slug/at all", "line\nbreak", "é.\x7f", "/"):
        odd = evaluate(client, odd_key.replace("\n", "%0A"))
        assert odd.status_code == 404 and odd.json["errorCode"] == "FLAG_NOT_FOUND", odd_key
        assert odd.json["key"] == odd_key, odd_key
    cases = {
        b'{"context": {}}': "TARGETING_KEY_MISSING",
        b"{}": "TARGETING_KEY_MISSING",
        b"": "TARGETING_KEY_MISSING",
        b'{"context": {"targetingKey": ""}}': "TARGETING_KEY_MISSING",
        b'{"context": {"targetingKey": "user-123"}}': "INVALID_CONTEXT",
        b'{"context": {"targetingKey": "0"}}': "INVALID_CONTEXT",
        b'{"context": {"targetingKey": "99999999999999999999"}}': "INVALID_CONTEXT",
        b'{"context": {"targetingKey": 7}}': "INVALID_CONTEXT",
        b'{"context": []}': "INVALID_CONTEXT",
        b'{"context": {"targetingKey": "7"': "PARSE_ERROR",
        b"[1]": "PARSE_ERROR",
        b"\xff\xfe": "PARSE_ERROR",
        b"[" * 5_000: "PARSE_ERROR",  # too deep for the parser (never a 500), in front of Flask
        b"[" * 100_000: "PARSE_ERROR",  # the same, over the layer's 16 KiB: Flask's
    }
    for body, code in cases.items():
        for path in (FLAG.format("OF_NONE"), BULK):
            response = client.post(path, data=body, content_type="application/json")
            assert response.status_code == 400 and response.json["errorCode"] == code, (path, body)
            assert response.json["errorDetails"] and "error" not in response.json
            assert response.json.get("key") == ("OF_NONE" if path != BULK else None)


def test_an_empty_key_is_flag_not_found_with_its_key(flags, client):
    """``POST /ofrep/v1/evaluate/flags/`` (an SDK asked for the flag ""): the protocol's 404,
    FLAG_NOT_FOUND with the key, as for any other key that is no slug (not the router's GENERAL)."""
    response = evaluate(client, "")
    assert response.status_code == 404, response.data
    assert response.json["errorCode"] == "FLAG_NOT_FOUND" and response.json["key"] == ""
    assert client.post(BULK, json={"context": {"targetingKey": "7"}}).status_code == 200


def test_tokens_bearer_or_x_api_key_and_any_scope(app_on, redis_app, committed_db):
    client = app_on(API_TOKENS=TOKENS).test_client()
    client.post(
        "/api/v1/segments",
        json={"slug": "OF_TOKEN"},
        headers={"Authorization": "Bearer token-fedcba9876543210"},
    )
    for path, method in (
        (FLAG.format("OF_TOKEN"), "post"),
        (BULK, "post"),
        ("/ofrep/v1/configuration", "get"),
    ):
        call = getattr(client, method)
        body = {"json": {"context": {"targetingKey": "7"}}} if method == "post" else {}
        refused = call(path, **body)
        assert refused.status_code == 401 and refused.json["errorCode"] == "GENERAL"
        assert "X-API-Key" in refused.json["errorDetails"] and "error" not in refused.json
        wrong = call(path, headers={"X-API-Key": "token-wrong-wrong-wrong"}, **body)
        assert wrong.status_code == 401 and wrong.json["errorDetails"] == "unknown API token"
        assert call(path, headers={"X-API-Key": READ_TOKEN}, **body).status_code == 200
        assert call(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}, **body).status_code == 200
        both = {"Authorization": f"Bearer {READ_TOKEN}", "X-API-Key": "token-wrong-wrong-wrong"}
        assert call(path, headers=both, **body).status_code == 401  # every credential sent must be good
        empty = {"Authorization": f"Bearer {READ_TOKEN}", "X-API-Key": ""}
        assert call(path, headers=empty, **body).status_code == 401  # (an empty one too: OFREP's ST401)
    # X-API-Key only on these routes
    assert client.get("/api/v1/users/7/segments", headers={"X-API-Key": READ_TOKEN}).status_code == 401


def test_the_hot_path_answers_as_flask_does(app_on, redis_app, committed_db, capfd):
    """The single evaluation served in front of Flask equals Flask's own answer (a limited
    hot path makes Flask answer), and is logged and counted like a hot read."""
    app = app_on()
    plain = app.test_client()
    plain.post("/api/v1/segments", json={"slug": "OF_HOT", "rollout_percent": 100})
    flask_view = app.view_functions["ofrep.evaluate_flag"]
    app.view_functions["ofrep.evaluate_flag"] = lambda key: 1 / 0  # (a 200 now can only be the hot layer's)
    capfd.readouterr()
    fast = evaluate(plain, "OF_HOT", headers={"X-Request-ID": "of-1"})
    assert fast.status_code == 200 and fast.json["reason"] == "SPLIT"
    assert (
        fast.headers["X-Request-ID"] == "of-1"
        and "frame-ancestors 'none'" in fast.headers["Content-Security-Policy"]
    )
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith('{"time": ')]
    assert [(x["method"], x["status"], x["request_id"]) for x in lines] == [("POST", 200, "of-1")]
    app.view_functions["ofrep.evaluate_flag"] = flask_view
    slow = app_on(RATELIMIT_ENABLED=True, RATELIMIT_HOT_PATH="1000/second").test_client()  # all Flask's
    assert evaluate(slow, "OF_HOT").data == fast.data
    for key, user in (("NOPE", "7"), ("OF_HOT", "x")):  # errors: the hot layer hands them to Flask
        assert evaluate(plain, key, user).data == evaluate(slow, key, user).data


def test_a_failing_read_is_answered_in_the_protocols_format(app_on, redis_app, committed_db, monkeypatch):
    app = app_on()

    class Broken(Reader):
        def view(self, user_id, now=None):
            raise RuntimeError("database unreachable")

    monkeypatch.setitem(app.extensions, "reader", Broken(app.extensions["read_engine"]))
    response = evaluate(app.test_client(), "ANY")
    assert response.status_code == 500 and response.json == {
        "key": "ANY",
        "errorCode": "GENERAL",
        "errorDetails": "Internal server error.",
    }


def test_rate_limited_only_when_the_operator_sets_a_hot_path_limit(app_on, redis_app, committed_db):
    limited = app_on(RATELIMIT_ENABLED=True, RATELIMIT_HOT_PATH="2/minute").test_client()
    limited.post("/api/v1/segments", json={"slug": "OF_LIMIT"})
    answers = [evaluate(limited, "OF_LIMIT") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) > 0 and answers[2].json["errorCode"] == "GENERAL"
    unlimited = app_on(RATELIMIT_ENABLED=True).test_client()
    assert {evaluate(unlimited, "OF_LIMIT").status_code for _ in range(5)} == {200}


def test_bulk_every_live_segment_etag_and_304(flags, client):
    first = client.post(BULK, json={"context": {"targetingKey": "7"}})
    assert first.status_code == 200
    got = {f["key"]: (f["value"], f["reason"]) for f in first.json["flags"]}
    assert got == {
        "OF_EXPLICIT": (True, "TARGETING_MATCH"),
        "OF_NONE": (False, "DEFAULT"),
        "OF_ROLLOUT": (True, "SPLIT"),
    }
    assert [f["key"] for f in first.json["flags"]] == sorted(got)
    tag = first.headers["ETag"]
    assert tag == ofrep.etag(first.data)
    again = client.post(BULK, json={"context": {"targetingKey": "7"}}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == tag
    weak = client.post(
        BULK, json={"context": {"targetingKey": "7"}}, headers={"If-None-Match": f'"x", W/{tag}'}
    )
    assert weak.status_code == 304
    other = client.post(BULK, json={"context": {"targetingKey": "8"}}, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["ETag"] != tag  # (user 8 is not in OF_EXPLICIT)
    flags.post("/users/7/segments", {"add": ["OF_NONE"]})  # a change of the answer: a new ETag
    changed = client.post(BULK, json={"context": {"targetingKey": "7"}}, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert {f["key"]: f["reason"] for f in changed.json["flags"]}["OF_NONE"] == "TARGETING_MATCH"


def test_configuration(client):
    response = client.get("/ofrep/v1/configuration")
    assert response.json == {
        "name": "Segments",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean"]},
            "caching": {"enabled": False},
        },
    }
    tag = response.headers["ETag"]
    assert client.get("/ofrep/v1/configuration", headers={"If-None-Match": tag}).status_code == 304


def test_exact_as_the_hot_read_ttl_and_schedule(flags, client, db_session):
    """A membership's expiry to the microsecond and a scheduled rollout from its second: the
    evaluation at a moment equals the hot read at that moment."""
    from webapp.services.reads.ofrep import evaluation
    from webapp.services.reads.path import user_view

    flags.post("/segments", {"slug": "OF_SOON"})
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    flags.post("/users/9/segments", {"add": [{"slug": "OF_SOON", "expires_at": at.isoformat()}]})
    flags.post("/segments/OF_NONE/schedule", {"at": at.isoformat(), "rollout_percent": 100})
    for moment, member, none in (
        (at - timedelta(microseconds=1), True, "DEFAULT"),
        (at, False, "SPLIT"),
    ):
        view = user_view(db_session, 9, moment)
        soon = json.loads(evaluation("OF_SOON", view.catalog, view.active)[1])
        assert soon["value"] is member and soon["reason"] == ("TARGETING_MATCH" if member else "DEFAULT")
        later = json.loads(evaluation("OF_NONE", view.catalog, view.active)[1])
        assert later["reason"] == none
