"""Processes the tests start and break: Redis faults (SIGSTOP, stop/restart, CLIENT PAUSE), a
real ``flask worker`` subprocess, a real gunicorn's environment, the reaper, polling.

Every fault here is real: a redis-server of the test's own is stopped with a signal, killed
and restarted, or paused; a worker's work-horse is killed with SIGKILL; writers race on real
PostgreSQL connections. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from devstack.redis_server import direct_client

ROOT = Path(__file__).resolve().parents[2]
EXCEPTION_WORDS = ("Traceback", "Error", "Exception", "Timeout", "timed out", "Connection refused", "errno")


# -- Redis faults -----------------------------------------------------------------------------


def pause(server) -> None:
    """SIGSTOP the redis-server (its clients hang until their socket timeouts); returns once
    the kernel reports it stopped."""
    if hasattr(server, "pause"):
        server.pause()
    else:
        os.kill(server.process.pid, signal.SIGSTOP)
    process = psutil.Process(server.process.pid)
    assert wait_for(lambda: process.status() == psutil.STATUS_STOPPED, 2, 0.005), "redis-server did not stop"


def resume(server) -> None:
    if hasattr(server, "resume"):
        server.resume()
    else:
        os.kill(server.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def stopped_with_sigstop(server) -> Iterator[None]:
    pause(server)
    try:
        yield
    finally:
        resume(server)


def client_pause(server, ms: int = 3000) -> float:
    """``CLIENT PAUSE <ms> ALL`` from a client of our own (it waits for an earlier pause to end);
    returns the perf_counter time the pause began."""
    admin = direct_client(server.port, ms / 1000 + 5)
    try:
        admin.execute_command("CLIENT", "PAUSE", ms, "ALL")
        return time.perf_counter()
    finally:
        admin.close()


# -- workers and jobs -------------------------------------------------------------------------


def worker_env(app: Flask, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLASK_APP": "wsgi",
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": app.config["REDIS_URL"],
        "REPORTS_DIR": app.config["REPORTS_DIR"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


@contextlib.contextmanager
def flask_worker(app: Flask, log_path: Path, **env: str) -> Iterator[subprocess.Popen]:
    """A real ``python -m flask worker`` (forking, with RQ's scheduler) as a subprocess; it and
    every process it started are ended afterwards (by pid)."""
    log = open(log_path, "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "worker"],
        cwd=ROOT,
        env=worker_env(app, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        end_process_tree(proc)
        log.close()


def end_process_tree(proc: subprocess.Popen) -> None:
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(family, timeout=5)


def work_horse(worker: subprocess.Popen, timeout: float = 10.0) -> psutil.Process:
    """The worker's work-horse: its forked child that made itself a process-group leader
    (RQ's horse calls setpgrp; the scheduler child does not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(worker.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(child.pid) == child.pid:
                    return child
        time.sleep(0.01)
    raise AssertionError("the worker has no work-horse")


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def shorten_retries(app: Flask, seconds: int = 1, *, required: bool = True) -> list[str]:
    """The queued jobs retry after ``seconds`` instead of RETRY's 10 s and 60 s, so a test sees
    every retry within its time budget (RQ reads the intervals from the job's hash)."""
    from webapp.platform.queue import get_queue

    queue = get_queue(app, blocking=True)
    ids = queue.job_ids
    assert ids or not required, "no job was queued"
    for job_id in ids:
        queue.connection.hset(f"rq:job:{job_id}", "retry_intervals", json.dumps([seconds, seconds, seconds]))
    return ids


def run_reaper(app: Flask, later: timedelta = timedelta(hours=1)) -> None:
    """Run the recovery step (``webapp.jobs.tasks.reap_stuck_jobs``) as the scheduler would
    ``later`` from now, so the records in question count as stale."""
    from webapp.jobs.tasks import reap_stuck_jobs

    with app.app_context():
        reap_stuck_jobs(now=datetime.now(UTC) + later)
    shorten_retries(app, required=False)  # a job it queued again retries quickly too


def recover(app: Flask, report_id: str) -> dict:
    """A worker, then the design's recovery step if the report is not finished, then a worker
    again (Redis being back); the report row afterwards."""
    from webapp.jobs.worker import run_worker

    run_worker(app, burst=True, fork=False)
    if report_state(app, report_id)["status"] != "finished":
        run_reaper(app)
        run_worker(app, burst=True, fork=False)
    return report_state(app, report_id)


def report_state(app: Flask, report_id: str) -> dict:
    """The report row as the database has it now (a connection of its own, no session cache)."""
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        row = (
            conn.execute(
                sa.text("SELECT status, progress, rows, error, path FROM reports WHERE id = :id"),
                {"id": report_id},
            )
            .mappings()
            .one()
        )
    return dict(row)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def gunicorn_env(app: Flask, redis_url: str, workdir: Path, port: int, **overrides: str) -> dict[str, str]:
    """The environment of a real gunicorn serving the test app's database: its own Redis,
    reports, metrics directory and port, 2 workers, no rate limits, the dashboard open."""
    return {
        **os.environ,
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": redis_url,
        "SECRET_KEY": app.config["SECRET_KEY"],
        "REPORTS_DIR": str(workdir),
        "RATELIMIT_ENABLED": "false",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "DASHBOARD_OPEN": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        **overrides,
    }


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` served by a threaded HTTP server on a free 127.0.0.1 port: its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def rq_job_settled(app, job_id: str) -> bool:
    """RQ has nothing more to do for a bulk operation's job: finished, failed for good, or gone."""
    from webapp.platform.queue import get_queue
    from webapp.services.membership.bulk import operation_job_id

    job = get_queue(app, blocking=True).fetch_job(operation_job_id(job_id))
    return job is None or job.get_status(refresh=True) in ("finished", "failed", "stopped", "canceled")


def kill_horse_at(
    app: Flask, worker: subprocess.Popen, operation_id: str, log: Path, reached: Callable[[dict], bool]
) -> dict:
    """SIGKILL the worker's work-horse once the bulk operation's committed row satisfies
    ``reached``; the row as it stands after the kill."""
    from tests.support.checks import operation_state

    came = wait_for(lambda: reached(operation_state(app, operation_id)), 120, 0.005)
    assert came, f"{operation_state(app, operation_id)}\n{log_tail(log)}"
    horse = work_horse(worker)
    assert horse.pid != worker.pid and horse.ppid() == worker.pid, (horse.pid, worker.pid)
    os.kill(horse.pid, signal.SIGKILL)
    horse.wait(5)
    time.sleep(0.05)
    # the worker itself must live on to record the failure and retry (once, in a local run, it had
    # died of SIGKILL too: say so at once instead of waiting for an operation nobody runs)
    assert worker.poll() is None, f"the worker died too ({worker.returncode})\n{log_tail(log)}"
    return operation_state(app, operation_id)


def operation_finished(app: Flask, operation_id: str, log: Path, timeout: float = 300) -> dict:
    """Wait for a bulk operation to finish after kills (never ``failed``): when RQ has nothing
    left to do for it (it gave up on the killed job), the reaper queues it again. Its final row."""
    from tests.support.checks import operation_state

    deadline = time.monotonic() + timeout
    while (row := operation_state(app, operation_id))["status"] != "finished":
        assert row["status"] != "failed" and time.monotonic() < deadline, f"{row}\n{log_tail(log)}"
        if rq_job_settled(app, operation_id):
            time.sleep(1)  # (a retry being scheduled, or the worker recording the failure)
            if (
                rq_job_settled(app, operation_id)
                and operation_state(app, operation_id)["status"] != "finished"
            ):
                run_reaper(app)
        time.sleep(0.2)
    return row
