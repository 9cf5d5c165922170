"""Enqueueing background jobs on RQ by dotted path (no import of the job code), after commit.

Jobs are stored as JSON, never pickle: write access to Redis must not mean code execution
in a worker. Every queue, worker and the scheduler use :class:`JsonJob`.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from webapp.http.transaction import after_commit
from webapp.platform.redis_client import redis_client

log = logging.getLogger(__name__)
QUEUE_NAME = "segments"
RETRY = Retry(max=2, interval=[10, 60])
JOB_TIMEOUT = 3600


class JsonJob(Job):
    """An RQ job serialised as JSON (arguments here are ids and strings)."""

    def __init__(self, id: str | None = None, connection: Redis | None = None, serializer: object = None):
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)


def get_queue(app: Flask | None = None, *, blocking: bool = False) -> Queue:
    """The jobs queue; web processes use the short-timeout client, workers a blocking one."""
    return Queue(
        QUEUE_NAME,
        connection=redis_client(app, blocking=blocking),
        job_class=JsonJob,
        serializer=JSONSerializer,
    )


def enqueue(path: str, *args: object, job_id: str | None = None, timeout: int = JOB_TIMEOUT) -> Job:
    """Queue ``path(*args)`` (e.g. ``"webapp.jobs.tasks.generate_report"``) now."""
    return get_queue(current_app).enqueue(
        path,
        args=args,
        job_id=job_id,
        retry=RETRY,
        job_timeout=timeout,
        result_ttl=86_400,
        failure_ttl=7 * 86_400,
    )


def enqueue_after_commit(path: str, *args: object, job_id: str | None = None) -> None:
    """Queue the job once the surrounding transaction has committed (never for a rollback)."""
    after_commit(lambda: enqueue(path, *args, job_id=job_id))
