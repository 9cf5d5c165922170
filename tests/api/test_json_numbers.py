"""Issue 22: integer-valued numbers are integers (JSON Schema's ``integer`` admits 27269415.0),
exactly; a fraction or more than 64 bits is a clear 422. A key given twice in one object is 400
``duplicate_key`` on /api/v1; the seed's paths keep the Go service's reading (the last wins)."""

from __future__ import annotations

import json

import pytest

from webapp.rules import MAX_TTL_SECONDS


def post(client, path, text, method="post"):
    return getattr(client, method)(path, data=text, content_type="application/json")


def test_integer_valued_floats_are_integers(api, client):
    """Before: 422 "Input should be a valid integer" for each of these."""
    api.segment("NUMS")
    lookup = post(client, "/api/v1/users/segments:lookup", '{"user_ids": [27269415.0, 1e3]}')
    assert lookup.status_code == 200, lookup.json
    assert [u["user_id"] for u in lookup.json["users"]] == [27269415, 1000]
    change = post(
        client,
        "/api/v1/users/27269415/segments",
        '{"add": ["NUMS"], "ttl_seconds": 3600.0}',
    )
    assert change.status_code == 200, change.json
    bulk = post(client, "/api/v1/segments/NUMS/members", '{"user_ids": [5.0, 6], "ttl_seconds": 60.0}')
    assert bulk.status_code == 200 and bulk.json["added"] == 2
    members = client.get("/api/v1/segments/NUMS/members").json["items"]
    assert [m["user_id"] for m in members] == [5, 6, 27269415]
    report = post(client, "/api/v1/reports", '{"user_id": 7.0, "period": "2025-01"}')
    assert report.status_code == 202 and report.json["params"]["user_id"] == 7
    seed = post(client, "/segment/user", '{"user_id": 1001.0, "add": ["NUMS"], "ttl_days": 3.0}')
    assert seed.status_code == 200 and seed.json["user_id"] == 1001


@pytest.mark.parametrize(
    "body, field",
    [
        ('{"user_ids": [1.5]}', "user_ids[0]"),
        ('{"user_ids": [9223372036854775808.0]}', "user_ids[0]"),
        ('{"user_ids": [1e300]}', "user_ids[0]"),
        ('{"user_ids": [1], "ttl_seconds": 1.5}', "ttl_seconds"),
        ('{"user_ids": [1], "ttl_seconds": 1e300}', "ttl_seconds"),
        (f'{{"user_ids": [1], "ttl_seconds": {MAX_TTL_SECONDS + 1}.0}}', "ttl_seconds"),
    ],
)
def test_fractions_and_numbers_beyond_64_bits_are_422(api, client, body, field):
    api.segment("NUMS")
    response = post(client, "/api/v1/segments/NUMS/members", body)
    assert response.status_code == 422, response.json
    assert [d["field"] for d in response.json["error"]["details"]] == [field]


@pytest.mark.parametrize(
    "text", ['{"user_ids": [NaN]}', '{"user_ids": [Infinity]}', '{"user_ids": [-Infinity]}']
)
def test_nan_and_infinity_are_not_json(client, text):
    response = post(client, "/api/v1/users/segments:lookup", text)
    assert response.status_code == 400 and response.json["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    "path, text",
    [
        ("/api/v1/segments", '{"slug": "DUP_A", "slug": "DUP_B"}'),
        ("/api/v1/users/5/segments", '{"add": [{"slug": "DUP", "ttl_seconds": 60, "ttl_seconds": 0}]}'),
        ("/api/v1/users/segments:lookup", '{"user_ids": [1], "user_ids": [2]}'),
    ],
)
def test_a_key_given_twice_is_400_on_the_api(client, path, text):
    """Before: the last one silently won."""
    response = post(client, path, text)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "duplicate_key" and error["details"][0]["key"] in (
        "slug",
        "ttl_seconds",
        "user_ids",
    )
    assert client.get("/api/v1/segments/DUP_B").status_code == 404


def test_the_seeds_paths_keep_the_last_duplicate_as_go_did(client):
    response = post(client, "/segment", '{"slug": "DUP_A", "slug": "DUP_B"}')
    assert response.status_code == 200 and response.json == {"slug": "DUP_B"}
    change = post(client, "/segment/user", '{"user_id": 1, "user_id": 2, "add": ["DUP_B"]}')
    assert change.status_code == 200 and change.json["user_id"] == 2
    assert json.loads(client.get("/segment/user?id=2").data)["segments"] == [{"slug": "DUP_B"}]
