"""RQ worker bootstrap: one app (and app context) per worker process, not per job."""

from __future__ import annotations

from flask import Flask
from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

from webapp.extensions import db
from webapp.queue import JsonJob, get_queue


def run_worker(app: Flask, *, burst: bool = False, fork: bool = True, with_scheduler: bool = True) -> bool:
    """Process jobs until stopped (or until the queue is empty with ``burst``).

    The forking worker runs each job in a child process that inherits this app context;
    the engine is disposed first so no pooled connection is shared across the fork. With
    ``with_scheduler`` the worker also moves due retries and ``enqueue_in`` jobs from RQ's
    scheduled registry onto the queue (without it, retries wait forever).
    """
    queue = get_queue(app, blocking=True)
    with app.app_context():
        db.engine.dispose()
        worker_class = Worker if fork else SimpleWorker
        worker = worker_class(
            [queue], connection=queue.connection, job_class=JsonJob, serializer=JSONSerializer
        )
        return bool(worker.work(burst=burst, with_scheduler=with_scheduler))
