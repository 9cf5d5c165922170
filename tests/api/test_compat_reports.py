"""The seed's reports: GET /report (history since a moment until now, deduplicated while
pending), /report_check and /download (the seed's CSV, converted while streaming)."""

import io
import threading
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from webapp.jobs.worker import run_worker
from webapp.models import Report
from webapp.platform.extensions import db
from webapp.services.common import utcnow
from webapp.services.history import reports
from webapp.services.membership.bulk import delete_segment
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.segments.lifecycle import create_segment

T = datetime(2023, 9, 1, 12, 0, 5, 123456, tzinfo=UTC)


def envelope(response, status, code):
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.json["error"]["code"] == code and response.json["error"]["message"]


def stored(app, task_id) -> Report:
    with app.app_context():
        report = db.session.get(Report, uuid.UUID(task_id))
        db.session.expunge_all()
        return report


def seed_history(session):
    create_segment(session, "SEED_A", now=T - timedelta(days=1))
    create_segment(session, "SEED_B", now=T - timedelta(days=1))
    change_user_segments(session, 7, [AddSpec("SEED_A"), AddSpec("SEED_B")], now=T)
    change_user_segments(session, 7, [], ["SEED_A"], now=T + timedelta(hours=1))
    change_user_segments(session, 8, [AddSpec("SEED_B")], now=T + timedelta(hours=2))
    delete_segment(session, "SEED_B", now=T + timedelta(hours=3))
    session.commit()


def test_report_since_a_moment_is_all_history_from_it_until_now(redis_app, committed_db):
    client = redis_app.test_client()
    before = utcnow()
    response = client.get("/report?date=2023-08-29%2010:32")
    after = utcnow()
    assert response.status_code == 200 and set(response.json) == {"task_id"}
    report = stored(redis_app, response.json["task_id"])
    assert report.kind == "all_history" and report.status == "queued"
    assert report.params["from"] == "2023-08-29T10:32:00Z" and report.params["since"] == "2023-08-29 10:32"
    assert before <= reports.parse_bound(report.params["to"], "to") <= after
    assert set(report.params) == {"from", "to", "since"}
    # "+" is a space in a query string too; a month is that month; user_id narrows to one user.
    plus = stored(redis_app, client.get("/report?date=2023-08-29+10:32").json["task_id"])
    assert plus.id == report.id
    month = stored(redis_app, client.get("/report?date=2023-08").json["task_id"])
    assert month.kind == "all_history" and month.params == {
        "from": "2023-08-01T00:00:00Z",
        "to": "2023-09-01T00:00:00Z",
        "period": "2023-08",
    }
    user = stored(redis_app, client.get("/report?date=2023-08-29%2010:32&user_id=7").json["task_id"])
    assert (
        user.kind == "user_history"
        and user.params["user_id"] == 7
        and user.params["since"] == "2023-08-29 10:32"
    )


@pytest.mark.parametrize(
    "date",
    [
        "",
        "2023-8",
        "2023-13",
        "2023-08-29",
        "2023-08-29 10",
        "2023-08-29T10:32",
        "2023-08-29 10:32:00",
        "2023-02-30 10:00",
        "2023-08-29 24:00",
        "1969-12-31 23:59",
        "2023-08-29 10:32Z",
        "２０２３-08-29 10:32",
        "2023-08-29\x0010:32",
        "x" * 5000,
    ],
)
def test_a_bad_date_is_400(client, date):
    response = client.get("/report", query_string={"date": date})
    envelope(response, 400, "validation_failed")
    assert response.json["error"]["details"][0]["field"] == "date"


def test_identical_pending_requests_share_one_task(redis_app, committed_db):
    client = redis_app.test_client()

    def task(query):
        response = client.get(f"/report?{query}")
        assert response.status_code == 200, response.json
        return response.json["task_id"]

    first = task("date=2023-08-29%2010:32")
    assert task("date=2023-08-29%2010:32") == first  # "to" differs, the request does not
    assert task("date=2023-08-29%2010:33") != first
    assert task("date=2023-08-29%2010:32&user_id=7") not in (first, task("date=2023-08-29%2010:32&user_id=8"))
    assert task("date=2023-08-29%2010:32&user_id=7") == task("date=2023-08-29%2010:32&user_id=7")
    month = task("date=2023-08")
    assert task("date=2023-08") == month != task("date=2023-07")
    with redis_app.app_context():  # running is still pending
        db.session.execute(sa.update(Report).where(Report.id == uuid.UUID(first)).values(status="running"))
        db.session.commit()
    assert task("date=2023-08-29%2010:32") == first
    count = committed_db.scalar(sa.select(sa.func.count()).select_from(Report))
    run_worker(redis_app, burst=True, fork=False)
    # Once finished (or failed) a request makes a new report, up to date.
    again = task("date=2023-08-29%2010:32")
    assert again != first
    assert committed_db.scalar(sa.select(sa.func.count()).select_from(Report)) == count + 1
    assert reports.parse_bound(stored(redis_app, again).params["to"], "to") > reports.parse_bound(
        stored(redis_app, first).params["to"], "to"
    )


def test_concurrent_identical_requests_create_one_report(redis_app, committed_db):
    barrier = threading.Barrier(8)
    ids = []

    def call():
        client = redis_app.test_client()
        barrier.wait()
        ids.append(client.get("/report?date=2023-01-02%2003:04").json["task_id"])

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1


def test_a_stale_pending_report_is_not_shared(redis_app, committed_db):
    client = redis_app.test_client()
    first = client.get("/report?date=2023-08-29%2010:32").json["task_id"]
    with redis_app.app_context():
        db.session.execute(
            sa.update(Report)
            .where(Report.id == uuid.UUID(first))
            .values(created_at=utcnow() - reports.SHARE_PENDING_FOR - timedelta(minutes=1))
        )
        db.session.commit()
    assert client.get("/report?date=2023-08-29%2010:32").json["task_id"] != first


def test_report_check_statuses(redis_app, committed_db):
    client = redis_app.test_client()
    task = client.get("/report?date=2023-08-29%2010:32").json["task_id"]
    for status, seed in [("queued", "progress"), ("running", "progress"), ("failed", "fail")]:
        with redis_app.app_context():
            db.session.execute(sa.update(Report).where(Report.id == uuid.UUID(task)).values(status=status))
            db.session.commit()
        assert client.get(f"/report_check?task_id={task}").json == {"status": seed, "link_to_file": ""}
    envelope(client.get(f"/download?id={task}"), 409, "report_failed")
    envelope(client.get(f"/report_check?task_id={uuid.uuid4()}"), 404, "not_found")
    envelope(client.get("/report_check?task_id=not-a-uuid"), 404, "not_found")
    envelope(client.get("/report_check?task_id="), 400, "validation_failed")


def test_download_is_the_seed_csv(redis_app, committed_db):
    seed_history(committed_db)
    client = redis_app.test_client()
    task = client.get("/report?date=2023-09-01%2000:00").json["task_id"]
    late = client.get("/report?date=2023-09-01%2012:30").json["task_id"]
    envelope(client.get(f"/download?id={task}"), 409, "not_ready")
    run_worker(redis_app, burst=True, fork=False)
    link = client.get(f"/report_check?task_id={task}").json["link_to_file"]
    assert link, stored(redis_app, task).status
    download = client.get(link)
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"].startswith("attachment; filename=")
    assert download.data.decode() == (
        "user,segment,operation,date\n"
        "7,SEED_A,added,2023-09-01 12:00:05\n"
        "7,SEED_B,added,2023-09-01 12:00:05\n"
        "7,SEED_A,deleted,2023-09-01 13:00:05\n"
        "8,SEED_B,added,2023-09-01 14:00:05\n"
        "7,SEED_B,deleted,2023-09-01 15:00:05\n"
        "8,SEED_B,deleted,2023-09-01 15:00:05\n"
    )
    assert client.get(f"/download?id={late}").data.decode().splitlines()[1:] == [
        "7,SEED_A,deleted,2023-09-01 13:00:05",
        "8,SEED_B,added,2023-09-01 14:00:05",
        "7,SEED_B,deleted,2023-09-01 15:00:05",
        "8,SEED_B,deleted,2023-09-01 15:00:05",
    ]
    # /api/v1 keeps its own format for the same file.
    v1 = client.get(f"/api/v1/reports/{task}.csv").data.decode().splitlines()
    assert v1[0] == "user_id;segment;operation;timestamp"
    assert v1[3] == "7;SEED_A;removed;2023-09-01T13:00:05.123456Z"
    # The file gone (purged) is a 404, not a 500.
    reports.report_path(stored(redis_app, task)).unlink()
    envelope(client.get(link), 404, "report_gone")


def test_a_moment_in_the_future_gives_an_empty_report(redis_app, committed_db):
    client = redis_app.test_client()
    task = client.get("/report?date=9998-01-01%2000:00").json["task_id"]
    report = stored(redis_app, task)
    assert report.params["from"] == report.params["to"] == "9998-01-01T00:00:00Z"
    run_worker(redis_app, burst=True, fork=False)
    link = client.get(f"/report_check?task_id={task}").json["link_to_file"]
    assert client.get(link).data == b"user,segment,operation,date\n"


def test_seed_csv_conversion_streams_in_chunks():
    source = io.StringIO(
        "user_id;segment;operation;timestamp\n"
        "1;A;added;2023-08-29T10:32:05Z\n"
        "2;A;removed;2023-08-29T10:32:06.5Z\n"
        "3;B;added;2023-08-29T23:59:59.999999Z\n"
    )
    chunks = list(reports.seed_csv(source, rows_per_chunk=2))
    assert chunks == [
        b"user,segment,operation,date\n1,A,added,2023-08-29 10:32:05\n2,A,deleted,2023-08-29 10:32:06\n",
        b"3,B,added,2023-08-29 23:59:59\n",
    ]
    assert list(reports.seed_csv(io.StringIO(""))) == []
    members = b"".join(
        reports.seed_csv(io.StringIO("user_id;segment;added_at;expires_at\n5;A;2023-08-29T10:32:05Z;\n"))
    )
    assert members == b"user,segment,added_at,expires_at\n5,A,2023-08-29 10:32:05,\n"


def test_seed_csv_conversion_is_constant_memory(tmp_path):
    """Peak memory while converting does not grow with the file (one chunk of rows at a time)."""

    def peak(rows):
        path = tmp_path / f"{rows}.csv"
        with open(path, "w") as handle:
            handle.write("user_id;segment;operation;timestamp\n")
            for i in range(rows):
                handle.write(f"{i};SEGMENT_{i % 50};{'added' if i % 2 else 'removed'};2023-08-29T10:32:05Z\n")
        tracemalloc.start()
        total = 0
        with open(path, newline="") as handle:
            for chunk in reports.seed_csv(handle):
                total += len(chunk)
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert total > path.stat().st_size * 0.9
        return used, path.stat().st_size

    small, _ = peak(10_000)
    large, size = peak(60_000)
    assert large < small * 1.5 and large < size / 3, (small, large, size)


TOKENS = "svc-a:token-a-0123456789abcdef,svc-b:token-b-0123456789abcdef"
A = {"Authorization": "Bearer token-a-0123456789abcdef"}
B = {"Authorization": "Bearer token-b-0123456789abcdef"}


def test_with_api_tokens_a_task_is_its_requesters_only(app_on, redis_app, committed_db):
    client = app_on(API_TOKENS=TOKENS).test_client()
    envelope(client.get("/report?date=2023-08-29%2010:32"), 401, "unauthorized")
    task = client.get("/report?date=2023-08-29%2010:32", headers=A).json["task_id"]
    other = client.get("/report?date=2023-08-29%2010:32", headers=B).json["task_id"]
    assert other != task  # identical requests of two clients are not shared
    assert client.get(f"/report_check?task_id={task}", headers=A).json["status"] == "progress"
    envelope(client.get(f"/report_check?task_id={task}", headers=B), 404, "not_found")
    run_worker(redis_app, burst=True, fork=False)
    link = client.get(f"/report_check?task_id={task}", headers=A).json["link_to_file"]
    assert client.get(link, headers=A).status_code == 200
    envelope(client.get(link, headers=B), 404, "not_found")


def test_report_requests_are_rate_limited(app_on, redis_app, committed_db):
    client = app_on(RATELIMIT_ENABLED=True, RATELIMIT_REPORTS="2/hour").test_client()
    codes = [client.get(f"/report?date=2023-08-29%2010:3{i}").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    envelope(client.get("/report?date=2023-08-29%2010:39"), 429, "rate_limited")
