"""6. Cross-site writes: a body a browser form or a no-CORS fetch can send (text/plain) never
writes through the JSON API; identical pending report requests share one task."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.checks import assert_envelope, describe, snapshot

pytestmark = pytest.mark.fault

LATER = (datetime.now(UTC) + timedelta(days=30)).isoformat()
# Every JSON write route of /api/v1 and of the compat API, with a body that succeeds as JSON
# (the batch lookup writes nothing, but takes a JSON body like the writes).
WRITES = {
    "api.add_schedule": ("post", "/api/v1/segments/XSITE/schedule", {"at": LATER, "rollout_percent": 5}),
    "api.cancel_schedule": ("delete", "/api/v1/segments/XSITE_B/schedule/1", {}),
    "api.lookup_segments": ("post", "/api/v1/users/segments:lookup", {"user_ids": [7, 8]}),
    "api.bulk_remove": ("delete", "/api/v1/segments/XSITE/members", {"user_ids": [7]}),
    "api.bulk_replace": ("put", "/api/v1/segments/XSITE/members", {"user_ids": [8, 9]}),
    "api.create_report": ("post", "/api/v1/reports", {"kind": "all_history", "period": "2026-10"}),
    "api.export_members": ("post", "/api/v1/segments/XSITE/members:export", {}),
    "api.create_segment": ("post", "/api/v1/segments", {"slug": "XSITE_NEW"}),
    "api.patch_segment": ("patch", "/api/v1/segments/XSITE", {"rollout_percent": 100}),
    "api.delete_segment": ("delete", "/api/v1/segments/XSITE", {}),
    "api.preview_impact": ("post", "/api/v1/segments/XSITE/impact", {"change": "delete"}),
    "api.restore_segment": ("post", "/api/v1/segments/XSITE_GONE/restore", {}),
    "api.bulk_add": ("post", "/api/v1/segments/XSITE/members", {"user_ids": [1, 2, 3]}),
    "api.change_user_segments": ("post", "/api/v1/users/7/segments", {"add": ["XSITE_B"], "del": ["XSITE"]}),
    "api_compat.create_segment": ("post", "/segment", {"slug": "XSITE_NEW"}),
    "api_compat.delete_segment": ("delete", "/segment", {"slug": "XSITE"}),
    "api_compat.change_user": ("post", "/segment/user", {"user_id": 7, "add": ["XSITE_B"]}),
}
HOOK = "https://hooks.example.com/x"  # never called: no worker runs here
WRITES.update(
    {
        "api.create_webhook": ("post", "/api/v1/webhooks", {"url": HOOK, "event_types": ["segment.created"]}),
        "api.patch_webhook": ("patch", "/api/v1/webhooks/1", {"description": "x"}),
        "api.delete_webhook": ("delete", "/api/v1/webhooks/1", {}),
        "api.rotate_webhook_secret": ("post", "/api/v1/webhooks/1/rotate", {}),
        "api.pause_webhook": ("post", "/api/v1/webhooks/1/pause", {}),
        "api.resume_webhook": ("post", "/api/v1/webhooks/1/resume", {}),
        "api.test_webhook": ("post", "/api/v1/webhooks/1/test", {}),
        "api.redeliver_webhook": ("post", "/api/v1/webhooks/1/deliveries/1/redeliver", {}),
        "api.put_traits": ("put", "/api/v1/users/7/traits", {"traits": {"plan": "paid"}}),
        "api.patch_traits": ("patch", "/api/v1/users/7/traits", {"traits": {"plan": None}}),
        "api.delete_traits": ("delete", "/api/v1/users/7/traits", {}),
    }
)
# The trait import takes a file (JSON lines or CSV), not JSON: its own test below.
FILE_WRITES = {"api.import_traits"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def xsite(redis_app, committed_db):
    committed_db.execute(
        sa.text("TRUNCATE webhook_deliveries, webhook_events, webhook_subscriptions RESTART IDENTITY")
    )
    committed_db.commit()  # (rolled-back tests before this one moved the ids on)
    client = redis_app.test_client()
    hook = client.post("/api/v1/webhooks", json={"url": HOOK, "event_types": ["segment.created"]})
    assert hook.status_code == 201 and hook.json["id"] == 1  # its first delivery: XSITE's creation
    for slug in ("XSITE", "XSITE_B", "XSITE_GONE"):
        assert client.post("/api/v1/segments", json={"slug": slug}).status_code == 201
    assert client.delete("/api/v1/segments/XSITE_GONE").status_code < 300  # for the restore route
    assert client.post("/api/v1/users/7/segments", json={"add": ["XSITE"]}).status_code == 200
    planned = client.post("/api/v1/segments/XSITE_B/schedule", json={"at": LATER, "rollout_percent": 1})
    assert planned.status_code == 201 and planned.json["id"] == 1
    return redis_app


def queued_jobs(app) -> int:
    from webapp.platform.queue import get_queue

    queue = get_queue(app, blocking=True)
    return sum(
        1 for job in queue.jobs if job.func_name != "webapp.jobs.webhooks.pump"
    )  # (woken by the setup's writes)


def test_every_json_write_route_is_covered(app):
    routes = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.methods & MUTATING
        and rule.endpoint.split(".")[0] in ("api", "api_compat")
        and "not_allowed" not in rule.endpoint
    }  # (the compat API's 405 stubs)
    covered = set(WRITES) | FILE_WRITES
    assert routes == covered, f"routes not covered: {routes - covered}; gone: {covered - routes}"


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8"])
@pytest.mark.parametrize("endpoint", sorted(WRITES))
def test_a_text_plain_body_is_415_and_changes_nothing(endpoint, content_type, xsite):
    import json

    method, path, body = WRITES[endpoint]
    client = xsite.test_client()
    before, jobs = snapshot(xsite), queued_jobs(xsite)
    response = getattr(client, method)(path, data=json.dumps(body), content_type=content_type)
    assert response.status_code == 415, describe(response)
    assert_envelope(response)
    assert snapshot(xsite) == before, "the text/plain request changed the database"
    assert queued_jobs(xsite) == jobs, "the text/plain request queued a job"
    # The same body as JSON is accepted: the refusal above was about the media type alone.
    accepted = getattr(client, method)(path, json=body)
    assert accepted.status_code < 300, describe(accepted)


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/json"])
def test_a_trait_import_in_another_media_type_is_415_and_changes_nothing(content_type, xsite):
    """A cross-site form can send text/plain; the import takes JSON lines or CSV only."""
    client = xsite.test_client()
    path, body = "/api/v1/users/traits:import?mode=replace", '{"user_id": 7, "traits": {"plan": "paid"}}\n'
    before, jobs = snapshot(xsite), queued_jobs(xsite)
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 415, describe(response)
    assert_envelope(response)
    assert snapshot(xsite) == before, "the refused request changed the database"
    assert queued_jobs(xsite) == jobs, "the refused request queued a job"
    accepted = client.post(path, data=body, content_type="application/x-ndjson")
    assert accepted.status_code == 202, describe(accepted)


def test_identical_pending_compat_report_requests_share_one_task(xsite):
    client = xsite.test_client()
    first = client.get("/report?date=2026-11")
    assert first.status_code == 200, describe(first)
    task = first.json["task_id"]
    again = [client.get("/report?date=2026-11") for _ in range(3)]
    assert [r.json["task_id"] for r in again] == [task] * 3, [describe(r) for r in again]
    other = client.get("/report?date=2026-10")
    assert other.status_code == 200 and other.json["task_id"] != task
    assert queued_jobs(xsite) == 2


def test_identical_compat_report_requests_at_once_share_one_task(xsite):
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def ask():
        client = xsite.test_client()
        barrier.wait(30)
        response = client.get("/report?date=2026-09")
        ids.append(response.json["task_id"] if response.status_code == 200 else describe(response))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(ids) == 8 and len(set(ids)) == 1, ids
    assert queued_jobs(xsite) == 1
