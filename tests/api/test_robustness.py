"""Nothing a client can send yields a 500: every error is the JSON envelope with a 4xx."""

import pytest


def assert_envelope(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]


@pytest.mark.parametrize("body", ["{bad", "[1,2", "", "null", "\xff\xfe", "1e999999"])
def test_malformed_json(client, body):
    response = client.post("/api/v1/users/1/segments", data=body, content_type="application/json")
    assert response.status_code in (400, 422)
    assert_envelope(response, response.status_code)


@pytest.mark.parametrize(
    "body",
    [
        [],
        5,
        "text",
        {"add": "A"},
        {"add": [5]},
        {"add": [None]},
        {"add": [{"slug": True}]},
        {"del": [{"slug": "A"}]},
        {"add": [{"slug": "A", "ttl_seconds": 1.5}]},
        {"add": ["A"], "unknown": 1},
        {"ttl_seconds": 2**80, "add": ["A"]},
        {"add": ["Ω_UNICODE"]},
        {"add": ["A" * 10_000]},
    ],
)
def test_wrong_shapes(api, body):
    response = api.post("/users/1/segments", body)
    assert_envelope(response, 422)


@pytest.mark.parametrize("user_id", ["-1", "0", "abc", "1.5", str(2**63), "9" * 40, "%F0%9F%98%80", " 1"])
def test_bad_user_ids(api, user_id):
    assert_envelope(api.get(f"/users/{user_id}/segments"), 422)
    assert_envelope(api.post(f"/users/{user_id}/segments", {"add": []}), 422)


def test_largest_user_id_works(api):
    api.segment("BIG")
    top = 2**63 - 1
    assert api.change(top, ["BIG"]).status_code == 200
    assert api.active(top)[0]["slug"] == "BIG"


def test_ten_thousand_item_lists(api):
    api.segment("MANY")
    response = api.change(1, [f"S{i}" for i in range(10_000)], [f"D{i}" for i in range(10_000)])
    assert_envelope(response, 422)
    bulk = api.post("/segments/MANY/members", {"user_ids": list(range(1, 10_001))})
    assert bulk.status_code == 200 and bulk.json["added"] == 10_000


def test_unknown_routes_and_methods_are_json(api):
    assert_envelope(api.get("/nope"), 404)
    assert_envelope(api.put("/segments", {}), 405)
    assert_envelope(api.get("/segments/lower-case"), 422)
    assert_envelope(api.get("/segments/MISSING"), 404)
    assert_envelope(api.get("/segments/MISSING/members"), 404)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None]
)
def test_a_body_that_is_not_declared_json_is_415_and_changes_nothing(api, client, content_type):
    """A cross-site form can send text/plain JSON: it must never write."""
    response = client.post("/api/v1/segments", data='{"slug": "CSRF_TRY"}', content_type=content_type)
    assert_envelope(response, 415)
    assert response.json["error"]["code"] == "unsupported_media_type"
    assert api.get("/segments/CSRF_TRY").status_code == 404


def test_oversized_body_is_413_json(app_on, committed_db):
    small = app_on(MAX_CONTENT_LENGTH=1000).test_client()
    response = small.post(
        "/api/v1/segments/ANY/members",
        data='{"user_ids": [' + "1," * 2000 + "1]}",
        content_type="application/json",
    )
    assert_envelope(response, 413)
    assert response.json["error"]["code"] == "payload_too_large"
