"""Enqueueing jobs: RQ on Redis, or (embedded default) a thread pool in this process.

Either way the same job function runs inside an app context, and it is enqueued only
after the request's transaction commits.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, current_app
from rq import Queue, Retry

from webapp.redis_client import redis_client
from webapp.transaction import after_commit

log = logging.getLogger(__name__)
QUEUE_NAME = "segments"
RETRY = Retry(max=2, interval=[10, 60])
REPORT_TIMEOUT = 3600
_local_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segments-job")


def get_queue(app: Flask | None = None) -> Queue | None:
    connection = redis_client(app, blocking=True)
    return Queue(QUEUE_NAME, connection=connection) if connection is not None else None


def enqueue(func, *args, job_id: str | None = None, timeout: int = REPORT_TIMEOUT):
    """Run ``func(*args)`` in the background now (call after commit)."""
    app = current_app._get_current_object()
    queue = get_queue(app)
    if queue is not None:
        return queue.enqueue(func, args=args, job_id=job_id, retry=RETRY, job_timeout=timeout,
                             result_ttl=86_400, failure_ttl=7 * 86_400)
    if not app.config["RUN_LOCAL_JOBS"]:
        log.info("local jobs disabled: %s%r stays queued", getattr(func, "__name__", func), args)
        return None
    return _local_pool.submit(_run_local, app, func, args)


def _run_local(app: Flask, func, args) -> None:
    with app.app_context():
        try:
            func(*args)
        except Exception:
            log.exception("background job %s failed", getattr(func, "__name__", func))


def enqueue_after_commit(report_id: str) -> None:
    """Queue the report job once the surrounding transaction has committed."""
    from webapp.jobs.tasks import generate_report

    after_commit(lambda: enqueue(generate_report, report_id, job_id=f"report-{report_id}"))
