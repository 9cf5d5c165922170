"""The seed service's paths, shapes and status codes, served by the same services."""

import json

import pytest

from webapp.jobs.worker import run_worker


def envelope(response, status, code=None):
    """An error in the JSON envelope with this status (and error code)."""
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.data[:300]
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- segments ----------------------------------------------------------------------------------


def test_create_segment_is_200_with_slug_and_409_when_it_exists(client):
    created = client.post("/segment", json={"slug": "AVITO_VOICE_MESSAGES"})
    assert created.status_code == 200 and created.json == {"slug": "AVITO_VOICE_MESSAGES"}
    envelope(client.post("/segment", json={"slug": "AVITO_VOICE_MESSAGES"}), 409, "conflict")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b"[]",
        b'"AVITO"',
        b"{}",
        b'{"slug": 5}',
        b'{"slug": null}',
        b'{"slug": "lower_case"}',
        b'{"slug": "A", "extra": 1}',
        b'{"slug": "' + b"A" * 300 + b'"}',
        b'{"slug": "A\\u0000"}',
    ],
)
def test_create_segment_with_an_empty_or_invalid_body_is_400(client, body):
    envelope(client.post("/segment", data=body, content_type="application/json"), 400)


def test_delete_segment_is_200_and_404_when_unknown(client):
    client.post("/segment", json={"slug": "AVITO_DISCOUNT_30"})
    client.post("/segment/user", json={"user_id": 7, "add": ["AVITO_DISCOUNT_30"]})
    deleted = client.delete("/segment", json={"slug": "AVITO_DISCOUNT_30"})
    assert deleted.status_code == 200
    assert deleted.json["slug"] == "AVITO_DISCOUNT_30" and deleted.json["members_removed"] == 1
    envelope(client.delete("/segment", json={"slug": "AVITO_DISCOUNT_30"}), 404, "not_found")
    envelope(client.delete("/segment", json={"slug": "NEVER_EXISTED"}), 404, "not_found")
    envelope(client.delete("/segment", json={}), 400)
    envelope(client.delete("/segment", data=b"", content_type="application/json"), 400)
    # The slug is free again: the seed's client can re-create it.
    assert client.post("/segment", json={"slug": "AVITO_DISCOUNT_30"}).status_code == 200


# -- a user's segments -------------------------------------------------------------------------


def test_segment_user_flow(client):
    assert client.post("/segment", json={"slug": "AVITO_VOICE_MESSAGES"}).status_code == 200
    assert client.post("/segment", json={"slug": "AVITO_DISCOUNT_30"}).status_code == 200
    changed = client.post(
        "/segment/user",
        json={
            "user_id": 1000,
            "add": ["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_30"],
            "del": [],
            "ttl_days": 3,
        },
    )
    assert changed.status_code == 200 and changed.json["added"] == [
        "AVITO_VOICE_MESSAGES",
        "AVITO_DISCOUNT_30",
    ]
    got = client.get("/segment/user?id=1000")
    assert got.status_code == 200
    assert got.json == {
        "user_id": 1000,
        "segments": [{"slug": "AVITO_DISCOUNT_30"}, {"slug": "AVITO_VOICE_MESSAGES"}],
    }
    assert client.delete("/segment", json={"slug": "AVITO_DISCOUNT_30"}).status_code == 200
    assert client.get("/segment/user?id=1000").json["segments"] == [{"slug": "AVITO_VOICE_MESSAGES"}]
    removed = client.post("/segment/user", json={"user_id": 1000, "del": ["AVITO_VOICE_MESSAGES"]})
    assert removed.status_code == 200 and removed.json["removed"] == ["AVITO_VOICE_MESSAGES"]
    gone = client.get("/segment/user?id=1000")
    assert gone.status_code == 204 and gone.data == b""


def test_a_user_without_segments_is_204_with_no_body(client):
    response = client.get("/segment/user?id=5")
    assert response.status_code == 204 and response.data == b""


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?id=",
        "?id=-3",
        "?id=0",
        "?id=abc",
        "?id=1.5",
        "?id=%00",
        f"?id={2**63}",
        "?id=99999999999999999999999",
        "?id=%EF%BC%93",
    ],
)
def test_a_bad_user_id_is_400(client, query):
    envelope(client.get(f"/segment/user{query}"), 400, "validation_failed")


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "1", "add": []},
        {"user_id": 1.5},
        {"user_id": True},
        {"user_id": 0, "add": []},
        {"user_id": 2**63, "add": []},
        {"user_id": 2**80, "add": []},
        {"add": ["SEG"]},
        {"user_id": 1, "add": ["SEG"], "ttl_days": 0},
        {"user_id": 1, "add": ["SEG"], "ttl_days": 3661},
        {"user_id": 1, "add": ["SEG"], "ttl_days": "3"},
        {"user_id": 1, "add": "SEG"},
        {"user_id": 1, "add": [5]},
        {"user_id": 1, "add": ["NO_SUCH_SEGMENT"]},
        {"user_id": 1, "del": ["NO_SUCH_SEGMENT"]},
        {"user_id": 1, "add": ["SEG"], "del": ["SEG"]},
        {"user_id": 1, "add": ["SEG", "SEG"]},
        {"user_id": 1, "add": ["bad slug"]},
        {"user_id": 1, "ttl": 3},
        {"user_id": 1, "add": ["SEG"] * 1001},
    ],
)
def test_user_change_validation_errors_are_400_not_422(client, body):
    client.post("/segment", json={"slug": "SEG"})
    error = envelope(client.post("/segment/user", json=body), 400)
    assert error["code"] == "validation_failed" and error["details"]
    assert client.get("/segment/user?id=1").status_code == 204  # nothing was applied


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get("/segment/user"),
        lambda c: c.get("/segment/user?id=-3"),
        lambda c: c.post("/segment", json={}),
        lambda c: c.post("/segment/user", json={"user_id": "1", "add": []}),
        lambda c: c.post("/segment/user", json={"user_id": 1, "add": ["X"], "ttl_days": 0}),
        lambda c: c.post("/segment/user", data=b"[1, 2", content_type="application/json"),
        lambda c: c.delete("/segment", json={"slug": "MISSING"}),
        lambda c: c.get("/report?date=2023-8"),
        lambda c: c.get("/report"),
        lambda c: c.get("/report?date=2023-08-29T10:32"),
        lambda c: c.get("/report?date=2023-02-30%2010:32"),
        lambda c: c.get("/report?date=2023-08-29%2010:32&user_id=x"),
        lambda c: c.get("/report_check"),
        lambda c: c.get("/report_check?task_id=zzz"),
        lambda c: c.get("/report_check?task_id=00000000-0000-0000-0000-000000000000"),
        lambda c: c.get("/download"),
        lambda c: c.get("/download?id=%00"),
        lambda c: c.get("/download?id=00000000-0000-0000-0000-000000000000"),
        lambda c: c.put("/segment", json={"slug": "X"}),
        lambda c: c.post("/report"),
        lambda c: c.delete("/download"),
    ],
)
def test_compat_errors_are_the_json_envelope_and_never_422(client, call):
    response = call(client)
    assert 400 <= response.status_code < 500 and response.status_code != 422, response.status_code
    envelope(response, response.status_code)


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PATCH", "/segment", "DELETE, OPTIONS, POST"),
        ("PUT", "/segment/user", "GET, HEAD, OPTIONS, POST"),
        ("POST", "/report_check", "GET, HEAD, OPTIONS"),
        ("TRACE", "/report", "GET, HEAD, OPTIONS"),
        ("FOO", "/download", "GET, HEAD, OPTIONS"),
        ("GET", "/segment", "DELETE, OPTIONS, POST"),
    ],
)
def test_other_methods_are_405_with_the_envelope_and_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allowed
    options = client.options(path)  # OPTIONS keeps Flask's answer, listing only the real methods
    assert options.status_code == 200 and set(options.headers["Allow"].split(", ")) == set(
        allowed.split(", ")
    )


def test_the_405_hook_leaves_other_paths_alone(client):
    assert client.put("/api/v1/segments").json["error"]["code"] == "method_not_allowed"  # /api/: JSON already
    page = client.put("/segments")  # the dashboard: its HTML page, as before
    assert page.status_code in (404, 405) and page.mimetype == "text/html"


# -- Idempotency-Key ---------------------------------------------------------------------------


def test_idempotency_key_works_as_on_api_v1(redis_app, committed_db):
    client = redis_app.test_client()
    key = {"Idempotency-Key": "seed-create-1"}
    first = client.post("/segment", json={"slug": "IDEM_SEED"}, headers=key)
    again = client.post("/segment", json={"slug": "IDEM_SEED"}, headers=key)
    assert first.status_code == again.status_code == 200 and again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    # Without the key the same call is a real second attempt (accepted, and answered 409).
    envelope(client.post("/segment", json={"slug": "IDEM_SEED"}), 409, "conflict")
    # The same key for another request: the seed has no 422, so 400.
    envelope(client.post("/segment", json={"slug": "OTHER_SEED"}, headers=key), 400, "idempotency_key_reused")
    change = {"user_id": 3, "add": ["IDEM_SEED"], "ttl_days": 1}
    one = client.post("/segment/user", json=change, headers={"Idempotency-Key": "seed-change"})
    two = client.post("/segment/user", json=change, headers={"Idempotency-Key": "seed-change"})
    assert one.status_code == two.status_code == 200 and two.data == one.data
    assert two.headers["Idempotent-Replayed"] == "true"
    bad = client.delete("/segment", json={"slug": "NOPE"}, headers={"Idempotency-Key": "seed-delete"})
    replay = client.delete("/segment", json={"slug": "NOPE"}, headers={"Idempotency-Key": "seed-delete"})
    assert bad.status_code == replay.status_code == 404 and replay.data == bad.data
    envelope(
        client.post("/segment", json={"slug": "K"}, headers={"Idempotency-Key": "x" * 300}),
        400,
        "invalid_idempotency_key",
    )


# -- reports -----------------------------------------------------------------------------------


def test_report_and_report_check(redis_app, committed_db):
    client = redis_app.test_client()
    task = client.get("/report?date=2030-01").json["task_id"]
    assert client.get(f"/report_check?task_id={task}").json == {"status": "progress", "link_to_file": ""}
    run_worker(redis_app, burst=True, fork=False)
    done = client.get(f"/report_check?task_id={task}")
    assert done.status_code == 200
    assert done.json == {"status": "success", "link_to_file": f"http://localhost/download?id={task}"}
    download = client.get(done.json["link_to_file"])
    assert download.status_code == 200 and download.data == b"user,segment,operation,date\n"


def test_health_and_request_logs(client, capfd):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["database"]["ok"] is True
    response = client.get("/api/v1/users/1/segments", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    line = json.loads(
        [line for line in capfd.readouterr().err.splitlines() if line.startswith('{"time": ')][-1]
    )
    assert (
        line["request_id"] == "req-123"
        and line["status"] == 200
        and line["path"] == "/api/v1/users/1/segments"
    )
    assert line["method"] == "GET" and line["duration_ms"] >= 0
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32


# -- OpenAPI -----------------------------------------------------------------------------------

# 403 a token's scope, 503 the database unreachable, 413 a body too large: every call or write
# can answer them (webapp/api/docs.py EVERY_CALL, EVERY_WRITE).
SEED_CODES = {
    ("/segment", "post"): {"200", "400", "401", "403", "409", "413", "415", "429", "503"},
    ("/segment", "delete"): {"200", "400", "401", "403", "404", "409", "413", "415", "429", "503"},
    ("/segment/user", "post"): {"200", "400", "401", "403", "409", "413", "415", "429", "503"},
    ("/segment/user", "get"): {"200", "204", "400", "401", "403", "429", "503"},
    ("/report", "get"): {"200", "400", "401", "403", "429", "503"},
    ("/report_check", "get"): {"200", "400", "401", "403", "404", "429", "503"},
    ("/download", "get"): {"200", "400", "401", "403", "404", "409", "429", "503"},
}


def test_openapi_documents_the_seed_status_codes(client):
    paths = client.get("/api/openapi.json").json["paths"]
    for (path, method), codes in SEED_CODES.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == codes, (path, method, sorted(responses))
        for code in codes - {"200", "204"}:
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].startswith(
                "#/components/schemas/ErrorOut"
            ), (path, method, code)
    assert "content" not in paths["/segment/user"]["get"]["responses"]["204"]
    assert list(paths["/download"]["get"]["responses"]["200"]["content"]) == ["text/csv"]
    assert set(paths["/segment"]) == {"post", "delete"} and set(paths["/segment/user"]) == {"get", "post"}
    assert {p["name"] for p in paths["/segment"]["post"]["parameters"]} == {"Idempotency-Key"}
    assert {p["name"] for p in paths["/report"]["get"]["parameters"]} == {"date", "user_id"}
