"""CSV reports end to end: API -> RQ queue on real Redis -> SimpleWorker -> file -> download."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from webapp.jobs import worker
from webapp.jobs.tasks import generate_report
from webapp.platform.extensions import db
from webapp.platform.queue import get_queue
from webapp.services.history import reports
from webapp.services.membership.bulk import delete_segment
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.segments.lifecycle import create_segment, update_segment

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def parse(data: bytes):
    return list(csv.reader(io.StringIO(data.decode()), delimiter=";"))


def run_worker(app):
    worker.run_worker(app, burst=True, fork=False)


def seed_history(session):
    seg = create_segment(session, "REP_A", now=T0)
    create_segment(session, "REP_B", rollout_percent=100, now=T0)
    change_user_segments(session, 1, [AddSpec("REP_A")], now=T0 + timedelta(days=1))
    change_user_segments(
        session, 2, [AddSpec("REP_A", expires_at=T0 + timedelta(days=3))], now=T0 + timedelta(days=2)
    )
    change_user_segments(session, 1, [], ["REP_B"], now=T0 + timedelta(days=4))
    change_user_segments(session, 1, [AddSpec("REP_A")], now=T0 + timedelta(days=40))  # June: no-op
    delete_segment(session, "REP_A", now=T0 + timedelta(days=45))  # June
    session.commit()
    return seg


def test_user_report_through_rq(redis_app, committed_db):
    seed_history(committed_db)
    client = redis_app.test_client()
    response = client.post("/api/v1/reports", json={"user_id": 1, "period": "2025-05"})
    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "queued" and body["download_url"] is None
    assert client.get(body["status_url"]).json["status"] == "queued"
    run_worker(redis_app)
    done = client.get(body["status_url"]).json
    assert done["status"] == "finished" and done["progress"] == 100 and done["rows"] == 3
    download = client.get(done["download_url"])
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    assert "history-user-1-2025-05.csv" in download.headers["Content-Disposition"]
    rows = parse(download.data)
    assert rows == [
        ["user_id", "segment", "operation", "timestamp"],
        ["1", "REP_B", "added", "2025-05-01T00:00:00Z"],  # rollout 100% at creation
        ["1", "REP_A", "added", "2025-05-02T00:00:00Z"],
        ["1", "REP_B", "removed", "2025-05-05T00:00:00Z"],
    ]


def test_all_users_month_report_includes_ttl_and_deletions(redis_app, committed_db):
    seed_history(committed_db)
    client = redis_app.test_client()
    may = client.post("/api/v1/reports", json={"period": "2025-05"}).json
    june = client.post("/api/v1/reports", json={"from": "2025-06-01", "to": "2025-07-01"}).json
    assert may["kind"] == "all_history"
    run_worker(redis_app)
    may_rows = parse(client.get(client.get(may["status_url"]).json["download_url"]).data)[1:]
    assert [r[:3] for r in may_rows] == [
        ["1", "REP_A", "added"],
        ["2", "REP_A", "added"],
        ["2", "REP_A", "removed"],
        ["1", "REP_B", "removed"],
    ]
    assert may_rows[2][3] == "2025-05-04T00:00:00Z"  # the TTL exit at its true expiry time (not purged yet)
    assert [r[3] for r in may_rows] == sorted(r[3] for r in may_rows)
    june_file = client.get(client.get(june["status_url"]).json["download_url"])
    assert "history-all-users-2025-06-01_2025-07-01.csv" in june_file.headers["Content-Disposition"]
    june_rows = parse(june_file.data)[1:]
    assert june_rows == [["1", "REP_A", "removed", "2025-06-15T00:00:00Z"]]


def test_segment_members_export(redis_app, committed_db):
    create_segment(committed_db, "EXPORT")
    from webapp.services.membership.bulk import bulk_add

    bulk_add(committed_db, "EXPORT", [30, 10, 20], ttl_seconds=3600)
    committed_db.commit()
    client = redis_app.test_client()
    report = client.post("/api/v1/reports", json={"kind": "segment_members", "segment": "EXPORT"}).json
    run_worker(redis_app)
    rows = parse(client.get(f"/api/v1/reports/{report['id']}.csv").data)
    assert rows[0] == ["user_id", "segment", "added_at", "expires_at"]
    assert [r[0] for r in rows[1:]] == ["10", "20", "30"] and all(r[3].endswith("Z") for r in rows[1:])


def test_a_failing_report_is_retried_then_marked_failed(redis_app, committed_db):
    create_segment(committed_db, "VANISH")
    committed_db.commit()
    client = redis_app.test_client()
    report = client.post("/api/v1/reports", json={"kind": "segment_members", "segment": "VANISH"}).json
    delete_segment(committed_db, "VANISH")
    committed_db.commit()
    run_worker(redis_app)
    retrying = client.get(report["status_url"]).json
    assert retrying["status"] == "queued" and "retrying after NotFound" in retrying["error"]
    with redis_app.app_context(), pytest.raises(Exception, match="deleted"):
        generate_report(report["id"])  # the last attempt, outside RQ: no retries left
    failed = client.get(report["status_url"]).json
    assert failed["status"] == "failed" and "segment VANISH was deleted" in failed["error"]
    assert client.get(f"/api/v1/reports/{report['id']}.csv").status_code == 400


def test_job_is_enqueued_only_after_commit(redis_app, committed_db):
    with redis_app.test_request_context():
        reports.request_report(db.session, user_id=1, period="2025-01")
        assert get_queue(redis_app).count == 0
        db.session.rollback()
    assert get_queue(redis_app).count == 0
    with redis_app.app_context():
        assert db.session.scalar(sa.text("SELECT count(*) FROM reports")) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_id": 1, "period": "2025-13"}, "period"),
        ({"user_id": 1, "period": "May"}, "period"),
        ({"user_id": 1}, "period"),
        ({"user_id": 0, "period": "2025-01"}, "user_id"),
        ({"from": "2025-02-01", "to": "2025-01-01"}, "from"),
        ({"period": "2025-01", "from": "2025-01-01"}, "period"),
        ({"kind": "segment_members", "segment": "NOPE"}, "slug"),
        ({"kind": "weekly"}, "kind"),
        ({"kind": "user_history", "period": "2025-01"}, "user_id"),
    ],
)
def test_report_requests_are_validated(client, body, field):
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code in (404, 422), response.json
    assert response.json["error"]["details"][0]["field"] == field


def test_unknown_report_ids(client):
    assert client.get("/api/v1/reports/not-a-uuid").status_code == 404
    assert client.get("/api/v1/reports/00000000-0000-0000-0000-000000000000.csv").status_code == 404


def test_neutralise_formula_cells():
    assert [reports.neutralise(v) for v in ["=1+1", "+3", "-2", "@x", "ok", 5, None]] == [
        "'=1+1",
        "'+3",
        "'-2",
        "'@x",
        "ok",
        "5",
        "",
    ]


def test_rollout_changes_appear_in_user_reports(redis_app, committed_db):
    seg = create_segment(committed_db, "RAMP", rollout_percent=0, now=T0)
    from webapp.services.rollout import buckets as rollout

    user = next(u for u in range(1, 10_000) if 1000 <= rollout.bucket(seg.salt, u) < 2000)
    update_segment(committed_db, "RAMP", rollout_percent=10, now=T0 + timedelta(days=1))
    update_segment(committed_db, "RAMP", rollout_percent=20, now=T0 + timedelta(days=2))
    committed_db.commit()
    client = redis_app.test_client()
    report = client.post("/api/v1/reports", json={"user_id": user, "period": "2025-05"}).json
    run_worker(redis_app)
    rows = parse(client.get(f"/api/v1/reports/{report['id']}.csv").data)
    assert rows[1:] == [[str(user), "RAMP", "added", "2025-05-03T00:00:00Z"]]
