"""RQ worker bootstrap: one app (and app context) per worker process, not per job."""

from __future__ import annotations

from typing import Any

from flask import Flask
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_WORKER_TTL
from rq.job import Job
from rq.serializers import JSONSerializer

from webapp.platform.extensions import db
from webapp.platform.queue import JsonJob, get_queue


class OrphanAwareWorker(Worker):
    """RQ's forking worker, with a job orphaned by a dead worker picked up within about
    ``orphan_seconds`` instead of RQ's 10 minutes.

    RQ keeps each running job in its StartedJobRegistry until the worker's last heartbeat
    plus a window (RQ: monitoring interval + 60 s), and a worker cleans that registry
    (``StartedJobRegistry.cleanup``: retry, or fail as abandoned) at start and then every
    ``maintenance_interval`` (RQ: 10 minutes), between blocking dequeues of up to
    ``worker_ttl - 15`` s (RQ: 405 s). A worker killed with its work-horse (``kill -9``, the
    OOM killer, a lost machine) leaves its job ``started`` until then. Here the heartbeat
    comes every quarter of ``orphan_seconds``, the registry entry expires ``orphan_seconds``
    after it, and an idle worker cleans every ``orphan_seconds`` (its dequeue wait no longer)."""

    def __init__(self, *args: Any, orphan_seconds: int = 60, **kwargs: Any) -> None:
        self.orphan_seconds = max(4, orphan_seconds)
        interval = max(1, min(DEFAULT_JOB_MONITORING_INTERVAL, self.orphan_seconds // 4))
        kwargs.setdefault("job_monitoring_interval", interval)
        kwargs.setdefault("maintenance_interval", self.orphan_seconds)
        kwargs.setdefault("worker_ttl", min(DEFAULT_WORKER_TTL, self.orphan_seconds + 15))
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's min(time left before the job's timeout, monitoring interval) + 60 s, with
        the 60 s replaced so the whole window is ``orphan_seconds``."""
        rq_ttl = super().get_heartbeat_ttl(job, working_time)
        return max(1, rq_ttl - 60 + self.orphan_seconds - self.job_monitoring_interval)


def run_worker(app: Flask, *, burst: bool = False, fork: bool = True, with_scheduler: bool = True) -> bool:
    """Process jobs until stopped (or until the queue is empty with ``burst``).

    The forking worker runs each job in a child process that inherits this app context;
    the engine is disposed first so no pooled connection is shared across the fork. With
    ``with_scheduler`` the worker also moves due retries and ``enqueue_in`` jobs from RQ's
    scheduled registry onto the queue (without it, retries wait forever). The forking worker
    picks up jobs orphaned by a dead worker after JOB_ORPHAN_SECONDS (``OrphanAwareWorker``).
    """
    queue = get_queue(app, blocking=True)
    with app.app_context():
        db.engine.dispose()
        common: dict[str, Any] = {
            "connection": queue.connection,
            "job_class": JsonJob,
            "serializer": JSONSerializer,
        }
        worker: Worker | SimpleWorker
        if fork:
            worker = OrphanAwareWorker([queue], orphan_seconds=app.config["JOB_ORPHAN_SECONDS"], **common)
        else:
            worker = SimpleWorker([queue], **common)
        return bool(worker.work(burst=burst, with_scheduler=with_scheduler))
