"""RQ worker bootstrap: one app (and app context) per worker process, not per job; a worker
that outlives Redis going away."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import VERSION as RQ_VERSION
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_WORKER_TTL
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from webapp.platform.extensions import db
from webapp.platform.queue import JsonJob, get_queue

log = logging.getLogger(__name__)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class OutageAwareWorker(BaseWorker):
    """Notes why RQ's work loop ended, so ``run_worker`` can tell Redis going away (start a
    fresh worker once it answers) from a stop request (return) and from any other error.

    RQ's loop catches every exception, logs "found an unhandled exception, quitting...", and
    then its teardown (``register_death``) raises again while Redis is away; a Redis error that
    ended the last of the loop's steps below is in ``redis_lost``."""

    redis_lost: BaseException | None = None
    stop_asked = False

    def _noting(self, step: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one step, remembering whether it ended on a Redis error. The last step decides:
        a heartbeat that failed inside RQ's own retrying dequeue and then succeeded is no
        outage, and neither is any other exception."""
        try:
            result = step(*args, **kwargs)
        except Exception as exc:
            self.redis_lost = exc if isinstance(exc, REDIS_DOWN) else None
            raise
        self.redis_lost = None
        return result

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    def check_for_suspension(self, burst: bool) -> None:
        self._noting(super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._noting(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        return self._noting(super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._noting(super().execute_job, job, queue)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        self._noting(super().heartbeat, timeout, pipeline)


class OrphanAwareWorker(OutageAwareWorker, Worker):
    """RQ's forking worker, with a job orphaned by a dead worker picked up within about
    ``orphan_seconds`` instead of RQ's 10 minutes, and its work-horse watched through a Redis
    outage.

    RQ keeps each running job in its StartedJobRegistry until the worker's last heartbeat
    plus a window (RQ: monitoring interval + 60 s), and a worker cleans that registry
    (``StartedJobRegistry.cleanup``: retry, or fail as abandoned) at start and then every
    ``maintenance_interval`` (RQ: 10 minutes), between blocking dequeues of up to
    ``worker_ttl - 15`` s (RQ: 405 s). A worker killed with its work-horse (``kill -9``, the
    OOM killer, a lost machine) leaves its job ``started`` until then. Here the heartbeat
    comes every quarter of ``orphan_seconds``, the registry entry expires ``orphan_seconds``
    after it, and an idle worker cleans every ``orphan_seconds`` (its dequeue wait no longer).

    A heartbeat that cannot reach Redis is skipped (RQ would end the worker, leaving its
    work-horse running alone): the worker goes on waiting for its work-horse, heartbeats
    again once Redis answers, and records the job's end as usual."""

    def __init__(self, *args: Any, orphan_seconds: int = 60, **kwargs: Any) -> None:
        self.orphan_seconds = max(4, orphan_seconds)
        interval = max(1, min(DEFAULT_JOB_MONITORING_INTERVAL, self.orphan_seconds // 4))
        kwargs.setdefault("job_monitoring_interval", interval)
        kwargs.setdefault("maintenance_interval", self.orphan_seconds)
        kwargs.setdefault("worker_ttl", min(DEFAULT_WORKER_TTL, self.orphan_seconds + 15))
        super().__init__(*args, **kwargs)
        self.heartbeat_failing = False

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's min(time left before the job's timeout, monitoring interval) + 60 s, with
        the 60 s replaced so the whole window is ``orphan_seconds``."""
        rq_ttl = super().get_heartbeat_ttl(job, working_time)
        return max(1, rq_ttl - 60 + self.orphan_seconds - self.job_monitoring_interval)

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_DOWN as exc:
            if not self.heartbeat_failing:
                log.warning(
                    "worker: Redis unavailable during job %s (%s); its work-horse goes on", job.id, exc
                )
            self.heartbeat_failing = True
            return
        if self.heartbeat_failing:
            log.warning("worker: Redis is back; job %s heartbeats again", job.id)
            self.heartbeat_failing = False


class OutageAwareSimpleWorker(OutageAwareWorker, SimpleWorker):
    """RQ's in-process worker (``--no-fork``), its loop's end explained as above."""


class _StopWaiting(Exception):
    """SIGINT or SIGTERM while no worker runs (Redis away): stop as a warm shutdown would."""


def _stop_waiting(signum: int, frame: FrameType | None) -> None:
    raise _StopWaiting(signal.Signals(signum).name)


def _new_worker(app: Flask, queue: Queue, fork: bool, longest: float) -> OutageAwareWorker:
    common: dict[str, Any] = {
        "connection": queue.connection,
        "job_class": JsonJob,
        "serializer": JSONSerializer,
    }
    worker: OutageAwareWorker
    if fork:
        worker = OrphanAwareWorker([queue], orphan_seconds=app.config["JOB_ORPHAN_SECONDS"], **common)
    else:
        worker = OutageAwareSimpleWorker([queue], **common)
    worker.max_connection_wait_time = longest  # RQ's own retry of an idle dequeue: 1 s doubling up to this
    return worker


def _let_go(worker: OutageAwareWorker) -> None:
    """What a worker whose loop ended on a Redis error leaves behind in this process: its
    pubsub thread (RQ's teardown raised before unsubscribing), RQ's scheduler process, and a
    work-horse still running a job (waited for: its job records its own end)."""
    thread = worker.pubsub_thread
    if thread is not None:
        thread.stop()
        thread.join(timeout=5)
    if worker.pubsub is not None:
        with contextlib.suppress(Exception):
            worker.pubsub.close()
    scheduler_process = _scheduler_process(worker)
    if scheduler_process is not None and scheduler_process.is_alive():
        scheduler_process.terminate()
        scheduler_process.join(timeout=10)
    horse = getattr(worker, "horse_pid", 0)
    if horse:
        log.warning("worker: waiting for work-horse %s to end its job before starting afresh", horse)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(horse, 0)


def _scheduler_process(worker: OutageAwareWorker) -> BaseProcess | None:
    """The process of RQ's scheduler that ``worker`` forked, if any. RQ keeps it only as the private
    ``RQScheduler._process``; its public ``Worker.stop_scheduler()`` sends SIGTERM and then joins
    without a time limit, and a scheduler asked to stop first releases its locks in Redis, which
    waits for as long as a stalled Redis does. This is the one place that reads it."""
    return worker.scheduler._process if worker.scheduler else None


def _wait_for_redis(connection: Redis, longest: float, exc: BaseException) -> float:
    """Ping after 1 s, doubling up to ``longest``, until Redis answers; the seconds waited."""
    log.warning("worker: Redis unavailable (%s); a fresh worker starts once it answers", exc)
    started, delay = time.monotonic(), 1.0
    while True:
        time.sleep(delay)
        try:
            connection.ping()
            return time.monotonic() - started
        except REDIS_DOWN:
            delay = min(delay * 2, longest)


def run_worker(app: Flask, *, burst: bool = False, fork: bool = True, with_scheduler: bool = True) -> bool:
    """Process jobs until stopped (or until the queue is empty with ``burst``).

    The forking worker runs each job in a child process that inherits this app context;
    the engine is disposed first so no pooled connection is shared across the fork. With
    ``with_scheduler`` the worker also moves due retries and ``enqueue_in`` jobs from RQ's
    scheduled registry onto the queue (without it, retries wait forever). The forking worker
    picks up jobs orphaned by a dead worker after JOB_ORPHAN_SECONDS (``OrphanAwareWorker``).

    Redis going away does not end the process (RQ's worker quits on it, at start too): the
    worker's loop ends, this logs one line, pings Redis after 1 s, doubling up to
    SCHEDULER_RECONNECT_MAX_SECONDS, and starts a fresh worker once it answers. A job left
    ``started`` by the outage is the orphan cleaning's (or the reaper's) as any other. Any
    other error still ends the process with a non-zero code; SIGINT/SIGTERM stop it. A
    ``burst`` run (tests, one-off) does not wait for Redis.
    """
    queue = get_queue(app, blocking=True)
    longest = max(1.0, float(app.config["SCHEDULER_RECONNECT_MAX_SECONDS"]))
    worked = False
    with app.app_context():
        db.engine.dispose()
        if burst:
            return bool(
                _new_worker(app, queue, fork, longest).work(burst=True, with_scheduler=with_scheduler)
            )
        log.info(
            "worker: RQ %s on queue %s, %s (pid %d)",
            RQ_VERSION,
            queue.name,
            "each job in a forked work-horse" if fork else "jobs in this process",
            os.getpid(),
        )
        while True:
            worker: OutageAwareWorker | None = None
            try:
                worker = _new_worker(app, queue, fork, longest)  # RQ names its connection: Redis at once
                worked = bool(worker.work(with_scheduler=with_scheduler)) or worked
                lost = worker.redis_lost
            except REDIS_DOWN as exc:  # at start (registering), or RQ's teardown after the loop ended
                lost = exc
            except _StopWaiting:  # stopped while a fresh worker was starting
                return worked
            if worker is not None and worker.stop_asked:
                return worked
            if lost is None:
                log.error("worker: RQ's work loop ended on an error (logged above); exiting")
                raise SystemExit(1)
            # Until the next worker installs RQ's handlers, a stop request ends the process.
            signal.signal(signal.SIGINT, _stop_waiting)
            signal.signal(signal.SIGTERM, _stop_waiting)
            try:
                if worker is not None:
                    _let_go(worker)
                waited = _wait_for_redis(queue.connection, longest, lost)
            except _StopWaiting as stop:
                log.info("worker: %s while waiting for Redis; stopping", stop)
                return worked
            if worker is not None:
                with contextlib.suppress(Exception):
                    worker.register_death()  # it could not while Redis was away
                if worker.scheduler is not None:  # RQ's scheduler lock: the fresh worker's takes over now,
                    with contextlib.suppress(Exception):  # not once the dead one's lease (61 s) runs out
                        worker.scheduler.release_locks()
            log.warning("worker: Redis answers again after %.0f s; starting a fresh worker", waited)
