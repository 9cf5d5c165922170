"""The worker survives Redis going away (the soak's finding): ``flask worker`` used to quit
when Redis stopped (RQ's heartbeat write while a job ran raised, "found an unhandled
exception, quitting..."; exit code 1) and at once when started while Redis was down, which
took ``make run``'s whole stack down with it. A real ``flask worker`` process, a redis-server
of the test's own (append-only, as docker-compose's) stopped for ~10 s while the worker is
idle, again while a job runs, and once before the worker starts: the same process must still
be running afterwards, the job it was running (a bulk add paced by BULK_PAUSE_MS so that it
outlasts the outage: a members report is written by COPY in about a second) must end finished
with every member added and recorded once, and a report queued afterwards must be processed
exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from devstack.redis_server import PrivateRedis, direct_client
from tests.support.checks import operation_state, scalar
from tests.support.processes import flask_worker, log_tail, operation_finished, report_state, wait_for
from tests.support.report_jobs import big_segment, job_id, live_horse, request_members_report

pytestmark = pytest.mark.fault

ADDED = 100_000  # ids of the bulk add that runs through the outage: 20 chunks of 5,000
SMALL = 5_000
OUTAGE = 10.0  # seconds
ORPHAN_SECONDS = 4
# 20 chunks with a pause of 1 s after each: the operation outlasts the outage whatever the load
ENV = {
    "JOB_ORPHAN_SECONDS": str(ORPHAN_SECONDS),
    "SCHEDULER_RECONNECT_MAX_SECONDS": "2",
    "BULK_CHUNK": "5000",
    "BULK_PAUSE_MS": "1000",
}
# A job left ``started`` by the outage is cleaned after ~ORPHAN_SECONDS and retried after the
# retry's 10 s; then the report finds itself finished. Wide margin for a loaded 2-core machine.
SETTLE_BUDGET = 120.0


@pytest.fixture
def redis_server(tmp_path: Path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory, appendonly=True)  # the queue and the started registry survive
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_app(app_on, redis_server, committed_db, tmp_path):
    reports_dir = tmp_path / "reports"
    reports_dir.mkdir()
    return app_on(REDIS_URL=redis_server.url, REPORTS_DIR=str(reports_dir))


def workers_registered(port: int) -> int:
    client = direct_client(port)
    try:
        return int(client.scard("rq:workers"))
    except Exception:
        return 0
    finally:
        client.close()


def attempts(app, report_id: str) -> int:
    import sqlalchemy as sa

    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT attempts FROM reports WHERE id = :id"), {"id": report_id})


def settled_once(app, report_id: str, members: int) -> dict:
    """The report finished, its CSV has every row once, it ran once, and RQ has its job
    finished with nothing left started or failed."""
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from webapp.platform.queue import get_queue

    def done():
        state = report_state(app, report_id)
        if state["status"] != "finished":
            return None
        job = get_queue(app, blocking=True).fetch_job(job_id(report_id))
        return state if job is not None and job.get_status(refresh=True) == "finished" else None

    state = wait_for(done, SETTLE_BUDGET, 0.2)
    assert state, f"report {report_id} did not settle: {report_state(app, report_id)}"
    lines = Path(state["path"]).read_text().splitlines()
    assert len(lines) == members + 1 and len(set(lines)) == members + 1, len(lines)
    assert attempts(app, report_id) == 1, "the report ran more than once"
    queue = get_queue(app, blocking=True)
    assert job_id(report_id) not in StartedJobRegistry(queue=queue).get_job_ids()
    assert job_id(report_id) not in FailedJobRegistry(queue=queue).get_job_ids()
    return state


def assert_alive(proc, log_path: Path, when: str) -> None:
    assert proc.poll() is None, f"the worker exited ({proc.returncode}) {when}\n{log_tail(log_path)}"


@pytest.mark.slow
def test_the_worker_survives_redis_going_away_idle_and_mid_job_and_runs_the_next_job_once(
    outage_app, redis_server, tmp_path
):
    app = outage_app
    client = app.test_client()
    assert client.post("/api/v1/segments", json={"slug": "OUTAGE_BULK"}).status_code == 201
    big_segment(app, "OUTAGE_AFTER", members=SMALL)
    log_path = tmp_path / "worker.log"
    with flask_worker(app, log_path, **ENV) as worker:
        assert wait_for(lambda: workers_registered(redis_server.port), 60, 0.1), log_tail(log_path)

        # 1. Redis away while the worker waits for work.
        redis_server.stop()
        time.sleep(OUTAGE)
        assert_alive(worker, log_path, "while Redis was away (idle)")
        redis_server.start()

        # 2. Redis away while a bulk operation runs (its work-horse goes on with its chunks).
        accepted = client.post(
            "/api/v1/segments/OUTAGE_BULK/members", json={"user_ids": list(range(1, ADDED + 1))}
        )
        assert accepted.status_code == 202, accepted.json
        operation = accepted.json["id"]
        assert wait_for(lambda: operation_state(app, operation)["done"] > 0, 60, 0.01), (
            f"the operation never started: {operation_state(app, operation)}\n{log_tail(log_path)}"
        )
        redis_server.stop()
        assert live_horse(worker) is not None, "the operation ended before Redis stopped"
        time.sleep(OUTAGE)
        assert_alive(worker, log_path, "while Redis was away (a job running)")
        redis_server.start()

        # The operation that ran through the outage ends with every id added and recorded once
        # (a chunk cut short by the outage is resumed, never done twice); a report queued now runs once.
        row = operation_finished(app, operation, log_path, timeout=SETTLE_BUDGET)
        assert (row["added"], row["error"]) == (ADDED, None), row
        count = "SELECT count(*) FROM memberships m JOIN segments s ON s.id = m.segment_id WHERE s.slug = 'OUTAGE_BULK'"
        assert scalar(app, count) == ADDED
        recorded = (
            "SELECT count({}) FROM membership_events WHERE segment_slug = 'OUTAGE_BULK' AND action = 'added'"
        )
        assert scalar(app, recorded.format("*")) == scalar(app, recorded.format("DISTINCT user_id")) == ADDED
        after = request_members_report(app, "OUTAGE_AFTER")
        settled_once(app, after, SMALL)
        assert_alive(worker, log_path, "after Redis came back")


@pytest.mark.slow
def test_a_worker_started_while_redis_is_down_waits_for_it_and_then_works(outage_app, redis_server, tmp_path):
    app = outage_app
    big_segment(app, "STARTED_DOWN", members=SMALL)
    log_path = tmp_path / "worker.log"
    redis_server.stop()
    with flask_worker(app, log_path, **ENV) as worker:
        time.sleep(OUTAGE / 2)
        assert_alive(worker, log_path, "having started while Redis was away")
        redis_server.start()
        assert wait_for(lambda: workers_registered(redis_server.port), 60, 0.1), log_tail(log_path)
        report_id = request_members_report(app, "STARTED_DOWN")
        settled_once(app, report_id, SMALL)
        assert_alive(worker, log_path, "after Redis came back")


@pytest.mark.slow
def test_a_worker_waiting_for_redis_stops_cleanly_on_sigterm(outage_app, redis_server, tmp_path):
    log_path = tmp_path / "worker.log"
    redis_server.stop()
    with flask_worker(outage_app, log_path, **ENV) as worker:
        assert wait_for(lambda: "a fresh worker starts once it answers" in log_tail(log_path), 30, 0.1), (
            log_tail(log_path)
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0, log_tail(log_path)
