"""The seed service's paths and shapes, served by the same services."""
import json
import logging

import pytest
from rq import SimpleWorker

from webapp.queue import get_queue


def test_segment_user_flow(client):
    assert client.post("/segment", json={"slug": "AVITO_VOICE_MESSAGES"}).status_code == 201
    assert client.post("/segment", json={"slug": "AVITO_DISCOUNT_30"}).status_code == 201
    changed = client.post("/segment/user", json={"user_id": 1000, "add": ["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_30"],
                                                  "del": [], "ttl_days": 3})
    assert changed.status_code == 200 and changed.json["added"] == ["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_30"]
    got = client.get("/segment/user?id=1000")
    assert got.json == {"user_id": 1000, "segments": [{"slug": "AVITO_DISCOUNT_30"}, {"slug": "AVITO_VOICE_MESSAGES"}]}
    assert client.get("/segment/user?id=5").json == {"user_id": 5, "segments": []}
    assert client.delete("/segment", json={"slug": "AVITO_DISCOUNT_30"}).status_code == 200
    assert client.get("/segment/user?id=1000").json["segments"] == [{"slug": "AVITO_VOICE_MESSAGES"}]


@pytest.mark.parametrize("call", [
    lambda c: c.get("/segment/user"), lambda c: c.get("/segment/user?id=-3"),
    lambda c: c.post("/segment", json={}), lambda c: c.post("/segment/user", json={"user_id": "1", "add": []}),
    lambda c: c.post("/segment/user", json={"user_id": 1, "add": ["X"], "ttl_days": 0}),
    lambda c: c.delete("/segment", json={"slug": "MISSING"}), lambda c: c.get("/report?date=2023-8"),
    lambda c: c.get("/report_check"), lambda c: c.get("/report_check?task_id=zzz"),
])
def test_compat_errors_are_json(client, call):
    response = call(client)
    assert 400 <= response.status_code < 500 and "error" in response.json


def test_report_and_report_check(redis_app, committed_db):
    app = redis_app
    client = app.test_client()
    task = client.get("/report?date=2030-01").json["task_id"]
    assert client.get(f"/report_check?task_id={task}").json == {"status": "queued", "link_to_file": ""}
    with app.app_context():
        queue = get_queue(app)
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
    done = client.get(f"/report_check?task_id={task}").json
    assert done["status"] == "finished" and done["link_to_file"].endswith(f"/api/v1/reports/{task}.csv")
    assert client.get(done["link_to_file"]).status_code == 200


def test_health_and_request_logs(client, caplog):
    caplog.set_level(logging.INFO, logger="segments.requests")
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["database"]["ok"] is True
    response = client.get("/api/v1/users/1/segments", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    line = json.loads([r.getMessage() for r in caplog.records if r.name == "segments.requests"][-1])
    assert line["request_id"] == "req-123" and line["status"] == 200 and line["path"] == "/api/v1/users/1/segments"
    assert line["method"] == "GET" and line["duration_ms"] >= 0
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32
