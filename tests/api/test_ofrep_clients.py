"""The official OpenFeature clients against a live server, with no client code of ours: the
Python SDK with the PyPI OFREP provider, and the JavaScript server SDK with
@openfeature/ofrep-provider under Node (tests/ofrep_clients). Values, reasons, variants and
metadata; the code default and the error code on every error (a key that does not exist, a
missing or bad targeting key, a missing token). Then the OFREP answers of 1,000 random users
equal their GET /api/v1/users/<id>/segments."""

import json
import random

import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.support.ofrep_clients import run_node
from tests.support.processes import served

TOKEN = "ofrep-client-0123456789"


@pytest.fixture
def scene(redis_app):
    """Three segments: user 7 explicitly in OFC_EXPLICIT (for an hour), everyone in OFC_ROLLOUT,
    nobody in OFC_NONE."""
    client = redis_app.test_client()
    for body in (
        {"slug": "OFC_EXPLICIT"},
        {"slug": "OFC_ROLLOUT", "rollout_percent": 100},
        {"slug": "OFC_NONE"},
    ):
        assert client.post("/api/v1/segments", json=body).status_code == 201
    client.post("/api/v1/users/7/segments", json={"add": [{"slug": "OFC_EXPLICIT", "ttl_seconds": 3600}]})
    return client.get("/api/v1/users/7/segments").json["segments"][0]["expires_at"]


EXPECTED = {  # flag -> (value, reason, variant, metadata source); user 7
    "OFC_EXPLICIT": (True, "TARGETING_MATCH", "on", "explicit"),
    "OFC_ROLLOUT": (True, "SPLIT", "on", "rollout"),
    "OFC_NONE": (False, "DEFAULT", "off", None),
}


def test_the_python_sdk_with_the_ofrep_provider(ofrep_server, scene):
    openfeature.set_provider(OFREPProvider(ofrep_server, timeout=10), domain="segments-python")
    client = openfeature.get_client("segments-python")
    user = EvaluationContext("7", {"plan": "premium", "country": "CA"})  # (other attributes: ignored)
    for flag, (value, reason, variant, source) in EXPECTED.items():
        details = client.get_boolean_details(flag, not value, user)
        assert (details.value, details.reason, details.variant, details.error_code) == (
            value,
            Reason[reason],
            variant,
            None,
        ), flag
        assert details.flag_metadata.get("source") == source
    assert client.get_boolean_details("OFC_EXPLICIT", False, user).flag_metadata["expires_at"] == scene
    errors = {
        ("NO_SUCH_SEGMENT", "7"): ErrorCode.FLAG_NOT_FOUND,
        ("OFC_ROLLOUT", None): ErrorCode.TARGETING_KEY_MISSING,
        ("OFC_ROLLOUT", "user-7"): ErrorCode.INVALID_CONTEXT,
        ("OFC_ROLLOUT", "0"): ErrorCode.INVALID_CONTEXT,
    }
    for (flag, key), code in errors.items():
        details = client.get_boolean_details(flag, True, EvaluationContext(key))
        assert (details.value, details.reason, details.error_code) == (True, Reason.ERROR, code), (flag, key)
        assert details.error_message  # the server's errorDetails
    openfeature.shutdown()


def test_the_python_sdk_with_tokens(app_on, redis_app, committed_db, scene):
    app = app_on(API_TOKENS=f"svc:{TOKEN}:read")
    with served(app) as url:
        openfeature.set_provider(OFREPProvider(url), domain="segments-anonymous")
        refused = openfeature.get_client("segments-anonymous").get_boolean_details(
            "OFC_ROLLOUT", False, EvaluationContext("7")
        )
        assert (refused.value, refused.error_code) == (False, ErrorCode.GENERAL)  # 401: "unauthorized"
        for header in ({"Authorization": f"Bearer {TOKEN}"}, {"X-API-Key": TOKEN}):
            provider = OFREPProvider(url, headers_factory=lambda header=header: header)
            openfeature.set_provider(provider, domain="segments-token")
            details = openfeature.get_client("segments-token").get_boolean_details(
                "OFC_ROLLOUT", False, EvaluationContext("7")
            )
            assert (details.value, details.reason) == (True, Reason.SPLIT)
    openfeature.shutdown()


def test_the_javascript_server_sdk_with_the_ofrep_provider(node_clients, ofrep_server, scene, tmp_path):
    cases = [
        {"flag": flag, "targetingKey": "7", "default": not value} for flag, (value, *_) in EXPECTED.items()
    ]
    cases += [
        {"flag": "NO_SUCH_SEGMENT", "targetingKey": "7", "default": True},
        {"flag": "OFC_ROLLOUT", "targetingKey": None, "default": False},
        {"flag": "OFC_ROLLOUT", "targetingKey": "user-7", "default": False},
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    results = json.loads(run_node("server_client.mjs", ofrep_server, str(tmp_path / "cases.json")))
    for result, (flag, (value, reason, variant, source)) in zip(results, EXPECTED.items(), strict=False):
        assert (
            result["flag"],
            result["value"],
            result["reason"],
            result["variant"],
            result["errorCode"],
        ) == (
            flag,
            value,
            reason,
            variant,
            None,
        )
        assert result["flagMetadata"].get("source") == source
    assert results[0]["flagMetadata"]["expires_at"] == scene
    errors = [(r["value"], r["reason"], r["errorCode"]) for r in results[3:]]
    assert errors == [
        (True, "ERROR", "FLAG_NOT_FOUND"),
        (False, "ERROR", "TARGETING_KEY_MISSING"),
        (False, "ERROR", "INVALID_CONTEXT"),
    ]


def test_answers_equal_the_hot_read_over_1000_random_users(redis_app, committed_db):
    """1,000 random users over explicit members (with and without expiry), exclusions, an
    exclusion group (whose explicit members leave its rollouts), rollouts: each user's bulk
    evaluation's true flags equal their GET /api/v1/users/<id>/segments (slug, source as the
    reason, expires_at), its false flags every other live segment, and a single evaluation of
    one flag the same value. (In process, through the whole WSGI stack, the layer in front of
    Flask included: the clients above cover the wire.)"""
    client = redis_app.test_client()
    rng = random.Random(26)
    users = rng.sample(range(1, 10**12), 1000)
    segments = [
        ("EQ_EXPLICIT", {}),
        ("EQ_HALF", {"rollout_percent": 50}),
        ("EQ_TENTH", {"rollout_percent": 10}),
        ("EQ_ALL", {"rollout_percent": 100}),
        ("EQ_GROUP_A", {"rollout_percent": 30, "exclusion_group": "EQ_GROUP"}),
        ("EQ_GROUP_B", {"rollout_percent": 20, "exclusion_group": "EQ_GROUP"}),
    ]
    for slug, fields in segments:
        assert client.post("/api/v1/segments", json={"slug": slug, **fields}).status_code == 201
    changes = [  # (method, segment, users, extra): bulk operations, answered at once
        ("post", "EQ_EXPLICIT", users[:150], {"ttl_seconds": 3600}),
        ("post", "EQ_EXPLICIT", users[150:300], {}),
        ("post", "EQ_TENTH", users[150:300], {}),
        ("post", "EQ_GROUP_B", users[250:350], {"skip_conflicts": True}),
        ("delete", "EQ_HALF", users[300:400], {}),  # explicitly removed from a rollout: exclusions
        ("delete", "EQ_ALL", users[300:400], {}),
    ]
    for method, slug, ids, extra in changes:
        answer = getattr(client, method)(f"/api/v1/segments/{slug}/members", json={"user_ids": ids, **extra})
        assert answer.status_code == 200, answer.json
    live = {slug for slug, _ in segments}
    for user in users:
        read = client.get(f"/api/v1/users/{user}/segments").json["segments"]
        bulk = client.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": str(user)}})
        flags = {f["key"]: f for f in bulk.json["flags"]}
        assert set(flags) == live
        on = [
            (key, f["metadata"]["source"], f["reason"], f["metadata"].get("expires_at"))
            for key, f in flags.items()
            if f["value"]
        ]
        reasons = {"explicit": "TARGETING_MATCH", "rollout": "SPLIT"}
        assert on == [(s["slug"], s["source"], reasons[s["source"]], s["expires_at"]) for s in read], user
        assert all(
            f["reason"] == "DEFAULT" and f["variant"] == "off" for f in flags.values() if not f["value"]
        )
        slug = rng.choice(sorted(live))
        single = client.post(
            f"/ofrep/v1/evaluate/flags/{slug}", json={"context": {"targetingKey": str(user)}}
        ).json
        assert single == flags[slug], (user, slug)
