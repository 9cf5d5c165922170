"""/api/v1/webhooks (issue 27): write scope only, the secret shown once (and on rotation),
internal destinations refused with a stable code, pause/resume, deliveries and redelivery."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.checks import AUTH, TOKENS
from webapp.platform.extensions import db

URL = "https://hooks.example.com/segments"  # never called: no worker runs here


def test_create_shows_the_secret_once_and_lists_without_it(api):
    created = api.post("/webhooks", {"url": URL, "event_types": ["segment.created", "report.finished"]})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["secret"].startswith("whsec_") and body["status"] == "active"
    assert created.headers["Location"].endswith(f"/api/v1/webhooks/{body['id']}")
    listed = api.get("/webhooks").json
    assert [s["id"] for s in listed["items"]] == [body["id"]]
    assert "secret" not in listed["items"][0] and "segment.changed" in listed["event_types"]
    assert "secret" not in api.get(f"/webhooks/{body['id']}").json
    rotated = api.post(f"/webhooks/{body['id']}/rotate").json
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    assert rotated["secret_rotating_until"] is not None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "internal"),
        ("http://localhost:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://user:pw@example.com/", "url"),
    ],
)
def test_internal_destinations_are_refused_with_a_code(app_on, committed_db, url, reason):
    production_like = app_on(WEBHOOK_ALLOW_LOOPBACK=False).test_client()
    response = production_like.post("/api/v1/webhooks", json={"url": url, "event_types": ["segment.created"]})
    assert response.status_code == 422, response.json
    (problem,) = response.json["error"]["details"]
    assert problem["code"] == "webhook_url_refused" and problem["reason"] == reason


def test_unknown_event_types_and_fields_are_refused(api):
    assert api.post("/webhooks", {"url": URL, "event_types": ["segment.exploded"]}).status_code == 422
    assert (
        api.post("/webhooks", {"url": "ftp://example.com/", "event_types": ["segment.created"]}).status_code
        == 422
    )
    assert api.post("/webhooks", {"url": URL, "event_types": []}).status_code == 422
    assert api.post("/webhooks", {"url": URL, "event_types": ["segment.created"], "x": 1}).status_code == 422
    missing = api.get("/webhooks/999")
    assert (
        missing.status_code == 404 and missing.json["error"]["details"][0]["code"] == "unknown_subscription"
    )


@pytest.mark.parametrize(
    ("description", "code"), [("a\x00b", "description_nul"), ("x" * 201, "string_too_long")]
)
def test_a_description_postgresql_cannot_store_or_too_long_is_refused(api, description, code):
    """The same description rule as a segment's (services.common.description_or_error): a NUL
    answered 500 from the database before (schemathesis found it)."""
    created = api.post(
        "/webhooks", {"url": URL, "event_types": ["segment.created"], "description": description}
    )
    assert created.status_code == 422, created.json
    assert created.json["error"]["details"][0]["code"] == code
    made = api.post("/webhooks", {"url": URL, "event_types": ["segment.created"]}).json
    changed = api.patch(f"/webhooks/{made['id']}", {"description": description})
    assert changed.status_code == 422, changed.json
    assert api.get(f"/webhooks/{made['id']}").json["description"] == ""


def test_pause_resume_patch_delete_and_redeliver(api):
    sub = api.post("/webhooks", {"url": URL, "event_types": ["segment.created"]}).json
    assert api.post(f"/webhooks/{sub['id']}/pause").json["status"] == "paused"
    api.segment("WHILE_PAUSED")
    (pending,) = api.get(f"/webhooks/{sub['id']}/deliveries").json["items"]
    assert pending["state"] == "pending" and pending["event_type"] == "segment.created"
    assert pending["webhook_id"].startswith("msg_")
    assert api.post(f"/webhooks/{sub['id']}/resume").json["status"] == "active"
    db.session.execute(text("UPDATE webhook_deliveries SET state = 'delivered', attempts = 1"))
    again = api.post(f"/webhooks/{sub['id']}/deliveries/{pending['id']}/redeliver")
    assert again.status_code == 202 and again.json["state"] == "pending"
    assert again.json["webhook_id"] == pending["webhook_id"]  # the same id: receivers dedupe
    assert api.post(f"/webhooks/{sub['id']}/deliveries/99999/redeliver").status_code == 404
    test = api.post(f"/webhooks/{sub['id']}/test")
    assert test.status_code == 202 and test.json["webhook_id"].startswith("msg_")
    patched = api.patch(f"/webhooks/{sub['id']}", {"event_types": ["segment.deleted"], "description": "x"})
    assert patched.json["event_types"] == ["segment.deleted"] and patched.json["description"] == "x"
    assert api.delete(f"/webhooks/{sub['id']}").status_code == 200
    assert api.get(f"/webhooks/{sub['id']}").status_code == 404


@pytest.mark.parametrize("scope", ["read", "reports"])
def test_only_a_write_token_manages_webhooks(app_on, committed_db, scope):
    client = app_on(API_TOKENS=TOKENS).test_client()
    for method, path in (("get", "/api/v1/webhooks"), ("post", "/api/v1/webhooks")):
        kwargs = {"json": {"url": URL, "event_types": ["segment.created"]}} if method == "post" else {}
        response = getattr(client, method)(path, headers=AUTH[scope], **kwargs)
        assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert client.get("/api/v1/webhooks", headers=AUTH["write"]).status_code == 200
