"""4. Jobs always finish or fail visibly: a work-horse killed with SIGKILL mid-report, a report
requested while Redis is down, a job that raises (retried by a real worker's scheduler)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.support.checks import assert_envelope, describe, outage_limit, timed
from tests.support.processes import (
    flask_worker,
    log_tail,
    recover,
    report_state,
    run_reaper,
    shorten_retries,
    wait_for,
    work_horse,
)
from tests.support.report_jobs import (
    MEMBERS,
    MID_REPORT,
    big_segment,
    job_id,
    live_horse,
    part_files,
    request_members_report,
)

pytestmark = pytest.mark.fault

FINAL = ("finished", "failed")


def kill_horse_mid_report(app, worker, report_id: str, log) -> int:
    """Wait until the report is being written (progress > 0, a .part file on disk), then
    SIGKILL the worker's work-horse; returns the killed pid."""

    def mid_job():
        state = report_state(app, report_id)
        assert state["status"] not in FINAL, f"the report ended before it could be killed: {state}"
        return state["status"] == "running" and state["progress"] > 0 and part_files(app)

    assert wait_for(mid_job, 30, 0.01), (
        f"the report never started: {report_state(app, report_id)}\n{log_tail(log)}"
    )
    horse = work_horse(worker)
    os.kill(horse.pid, signal.SIGKILL)
    horse.wait(5)
    return horse.pid


def rq_job_settled(app, report_id: str) -> bool:
    """RQ has nothing more to do for the report's job: finished, failed for good, or gone."""
    from webapp.platform.queue import get_queue

    job = get_queue(app, blocking=True).fetch_job(job_id(report_id))
    return job is None or job.get_status(refresh=True) in ("finished", "failed", "stopped", "canceled")


def settle(app, report_id: str, timeout: float, worker=None, *, killed: set[int] | None = None) -> dict:
    """Poll until the report is finished or failed. Whenever RQ has nothing left to do for its
    job (no retry left, or the job is gone) and the report still is not, run the design's
    recovery step (the reaper, as the scheduler would). With ``killed`` (the pids killed so
    far) every new attempt has its work-horse killed mid-job, once it has reset the progress
    and then made some (a job that always crashes)."""
    deadline = time.monotonic() + timeout
    started: set[int] = set()  # horses seen with progress 0: their attempt has begun
    while time.monotonic() < deadline:
        state = report_state(app, report_id)
        if state["status"] in FINAL:
            return state
        horse = live_horse(worker) if killed is not None else None
        if horse is not None and horse.pid not in killed:
            if state["progress"] == 0:
                started.add(horse.pid)
            elif horse.pid in started and state["status"] == "running":
                os.kill(horse.pid, signal.SIGKILL)
                killed.add(horse.pid)
            time.sleep(0.005)
            continue
        if rq_job_settled(app, report_id):
            time.sleep(0.5)  # (a retry being scheduled, or the worker recording the failure)
            if rq_job_settled(app, report_id) and report_state(app, report_id)["status"] not in FINAL:
                run_reaper(app)
        time.sleep(0.02)
    return report_state(app, report_id)


@pytest.mark.slow
def test_a_killed_work_horse_is_retried_to_finished_or_failed_and_leaves_no_part_file(jobs_app, tmp_path):
    big_segment(jobs_app, "KILLED")
    report_id = request_members_report(jobs_app, "KILLED")
    shorten_retries(jobs_app)  # RETRY's 10 s / 60 s, made 1 s, so the retry runs within the budget
    log = tmp_path / "worker.log"
    with flask_worker(jobs_app, log, **MID_REPORT) as worker:
        kill_horse_mid_report(jobs_app, worker, report_id, log)
        state = settle(jobs_app, report_id, 30)
        assert state["status"] in FINAL, f"stuck after SIGKILL of the work-horse: {state}\n{log_tail(log)}"
        if state["status"] == "failed":
            assert state["error"], state
        else:
            assert state["rows"] == MEMBERS, state
        assert part_files(jobs_app) == [], "a .part file outlived the recovery"


@pytest.mark.slow
def test_a_work_horse_killed_on_every_attempt_ends_failed_with_a_reason(jobs_app, tmp_path):
    big_segment(jobs_app, "ALWAYS_KILLED")
    report_id = request_members_report(jobs_app, "ALWAYS_KILLED")
    shorten_retries(jobs_app)
    log = tmp_path / "worker.log"
    with flask_worker(jobs_app, log, **MID_REPORT) as worker:
        killed = {kill_horse_mid_report(jobs_app, worker, report_id, log)}
        state = settle(jobs_app, report_id, 120, worker, killed=killed)  # (a wait, not a limit)
        assert state["status"] == "failed" and state["error"], (
            f"a report whose every attempt was killed ({len(killed)} kills) is not failed with a reason: "
            f"{state}\n{log_tail(log)}"
        )
        assert part_files(jobs_app) == [], "a .part file outlived the recovery"


def test_a_report_requested_while_redis_is_stopped_is_refused_or_finishes_once_redis_is_back(
    jobs_app, private_redis
):

    big_segment(jobs_app, "OUTAGE", members=10)
    client = jobs_app.test_client()
    _, baseline = timed(client.get, "/api/v1/segments")  # Redis healthy
    private_redis.stop()
    try:
        response, seconds = timed(
            client.post, "/api/v1/reports", json={"kind": "segment_members", "segment": "OUTAGE"}
        )
    finally:
        private_redis.start()  # an empty Redis: whatever was to be queued during the outage is not there
    assert seconds < outage_limit(baseline), f"{seconds:.2f}s ({baseline:.3f}s with Redis healthy)"
    if response.status_code == 503:
        assert_envelope(response)
        pending = report_state_count(jobs_app)
        assert pending == 0, f"refused with 503 but {pending} report(s) left pending"
        return
    assert response.status_code == 202, describe(response)
    state = recover(jobs_app, response.json["id"])
    assert state["status"] == "finished" and state["rows"] == 10, state


def report_state_count(app) -> int:
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM reports WHERE status IN ('queued', 'running')"))


@pytest.mark.slow
def test_a_job_that_raises_is_retried_by_the_worker_and_ends_failed_with_the_error(jobs_app, tmp_path):
    from webapp.platform.queue import get_queue

    big_segment(jobs_app, "RAISES", members=10)
    report_id = request_members_report(jobs_app, "RAISES")
    shorten_retries(jobs_app)
    # The worker host's REPORTS_DIR is a regular file: every attempt raises (FileExistsError).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    log = tmp_path / "worker.log"
    seen: list[tuple[str, str | None]] = []

    def failed():
        state = report_state(jobs_app, report_id)
        if not seen or seen[-1] != (state["status"], state["error"]):
            seen.append((state["status"], state["error"]))
        return state["status"] in FINAL and state

    with flask_worker(jobs_app, log, REPORTS_DIR=str(blocker / "reports")):
        state = wait_for(failed, 20, 0.02)
        assert state, f"the job never ended: {seen}\n{log_tail(log)}"
        assert state["status"] == "failed", seen
        assert "File exists" in state["error"] or "Not a directory" in state["error"], state
        assert not state["error"].startswith("retrying"), state
        job = get_queue(jobs_app, blocking=True).fetch_job(job_id(report_id))
        assert job is not None, "the job is gone from Redis"
        # (the report row is marked before RQ records the job's end)
        assert wait_for(lambda: job.get_status(refresh=True) == "failed", 5), job.get_status()
        job.refresh()
        # Both retries ran: RQ decrements retries_left only when it re-runs the job.
        assert job.retries_left == 0, f"RQ did not run both retries: retries_left={job.retries_left}; {seen}"
