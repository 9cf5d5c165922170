"""The restore routes' contract: scopes (reading a deleted segment is a read, restoring a
write), the OpenAPI document, and history items' additive ``cause``."""

from __future__ import annotations

from tests.support.checks import AUTH, TOKENS
from webapp.http.auth import READ, WRITE, required_scope


def test_reading_a_deleted_segment_is_a_read_and_restoring_it_a_write(app_on, redis_app, committed_db):
    app = app_on(API_TOKENS=TOKENS)
    client = app.test_client()
    assert (
        client.post("/api/v1/segments", json={"slug": "SCOPED_GONE"}, headers=AUTH["write"]).status_code
        == 201
    )
    assert client.delete("/api/v1/segments/SCOPED_GONE", headers=AUTH["write"]).status_code == 200
    views = app.view_functions
    assert required_scope(views["api.restore_segment"], "POST") == WRITE
    assert required_scope(views["api.deleted_segment"], "GET") == READ
    seen = client.get("/api/v1/segments/SCOPED_GONE/deleted", headers=AUTH["read"])
    assert seen.status_code == 200 and seen.json["deleted_by"] == "writer"
    for scope in ("read", "reports"):
        refused = client.post("/api/v1/segments/SCOPED_GONE/restore", headers=AUTH[scope])
        assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert client.post("/api/v1/segments/SCOPED_GONE/restore").status_code == 401
    restored = client.post("/api/v1/segments/SCOPED_GONE/restore", headers=AUTH["write"])
    assert restored.status_code == 200, restored.json
    assert restored.json["segment"]["slug"] == "SCOPED_GONE"
    history = client.get("/api/v1/segments/SCOPED_GONE/activity", headers=AUTH["read"]).json["items"]
    assert [(e["kind"], e["actor"]) for e in history[:2]] == [("restored", "writer"), ("deleted", "writer")]


def test_the_openapi_document_describes_the_routes_and_their_codes(client):
    document = client.get("/api/openapi.json").json
    restore = document["paths"]["/api/v1/segments/{slug}/restore"]["post"]
    assert {"200", "404", "409", "403"} <= set(restore["responses"])
    said = restore.get("summary", "") + restore.get("description", "")
    assert "slug_taken_since" in said and "restore_expired" in said, restore
    deleted = document["paths"]["/api/v1/segments/{slug}/deleted"]["get"]
    assert "no_deleted_segment" in deleted.get("summary", "") + deleted.get("description", "")
    schemas = document["components"]["schemas"]
    cause = next(v for k, v in schemas.items() if k.endswith(".CauseOut"))
    assert set(cause["properties"]["kind"]["enum"]) == {
        "change",
        "traits",
        "rules_changed",
        "created",
        "rollout",
        "group",
        "schedule",
        "deleted",
        "restored",
        "rules",
    }


def test_unknown_and_malformed_slugs_answer_in_the_envelope(api):
    missing = api.post("/segments/NEVER_DELETED/restore")
    assert missing.status_code == 404
    assert missing.json["error"]["details"][0]["code"] == "no_deleted_segment"
    bad = api.get("/segments/lower/deleted")
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["code"] == "slug_invalid"
    api.segment("LIVE_ONE")
    assert api.get("/segments/LIVE_ONE/deleted").status_code == 404
