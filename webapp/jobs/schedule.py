"""The nightly TTL expiry, registered in rq-scheduler under a stable id (idempotent)."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

import rq_scheduler.scheduler
from croniter import croniter
from flask import Flask
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq_scheduler import Scheduler

from webapp.platform.queue import QUEUE_NAME, JsonJob
from webapp.platform.redis_client import redis_client

log = logging.getLogger(__name__)
EXPIRY_JOB_ID = "segments-nightly-maintenance"
MAINTENANCE_JOB = "webapp.jobs.tasks.nightly_maintenance"
REAPER_JOB_ID = "segments-report-reaper"
REAPER_JOB = "webapp.jobs.tasks.reap_stuck_jobs"
REAPER_INTERVAL = 60  # seconds
ROLLOUTS_JOB_ID = "segments-scheduled-rollouts"
ROLLOUTS_JOB = "webapp.jobs.tasks.apply_scheduled_rollouts"
WEBHOOKS_JOB_ID = "segments-webhooks-sweep"
WEBHOOKS_JOB = "webapp.jobs.webhooks.sweep"
MAINTENANCE_TIMEOUT = 6 * 3600


def next_cron_time(cron_string: str, use_local_timezone: bool = False) -> datetime:
    """When a cron job runs next: rq-scheduler's ``get_next_scheduled_time``, from an aware "now".

    rq-scheduler 0.14 computes it with crontab's ``CronTab(cron).next(now=datetime.now())``: a
    naive "now", on which crontab warns in every scheduler process (a 9-line FutureWarning) that a
    later version will read it as UTC instead of local time. The answer is the same here (the
    scheduler runs with TZ=UTC, ``register_schedules``) and the warning's cause is the naive time,
    so the scheduler uses this instead, in ``Scheduler.cron`` and on each rescheduling: the same
    cron semantics through croniter (which ``validate_cron`` checks the string with), from
    ``datetime.now(UTC)`` (or the local zone when a job asks for it)."""
    now = datetime.now().astimezone() if use_local_timezone else datetime.now(UTC)
    return croniter(cron_string, now).get_next(datetime)


# (rq-scheduler looks the function up in its module on each call: Scheduler.cron, enqueue_job)
rq_scheduler.scheduler.get_next_scheduled_time = next_cron_time


def get_scheduler(app: Flask, *, blocking: bool = True) -> Scheduler:
    """The scheduler process uses a blocking client; web processes (status strip) a short-timeout one."""
    return Scheduler(
        queue_name=QUEUE_NAME,
        connection=redis_client(app, blocking=blocking),
        interval=app.config["SCHEDULER_INTERVAL_SECONDS"],
        job_class=JsonJob,
    )


def register_schedules(scheduler: Scheduler, cron: str) -> None:
    """(Re)register the nightly job, the report reaper, the scheduled-rollout applier and the
    webhook sweep (minutely); stale copies are cancelled first."""
    os.environ["TZ"] = "UTC"  # rq-scheduler evaluates cron strings in local time
    time.tzset()
    for job in scheduler.get_jobs():
        if job.id in (EXPIRY_JOB_ID, REAPER_JOB_ID, ROLLOUTS_JOB_ID, WEBHOOKS_JOB_ID):
            scheduler.cancel(job)
    for func, job_id in (
        (REAPER_JOB, REAPER_JOB_ID),
        (ROLLOUTS_JOB, ROLLOUTS_JOB_ID),
        (WEBHOOKS_JOB, WEBHOOKS_JOB_ID),
    ):  # every minute
        scheduler.schedule(
            datetime.now(UTC),
            func,
            id=job_id,
            interval=REAPER_INTERVAL,
            repeat=None,
            queue_name=QUEUE_NAME,
            timeout=REAPER_INTERVAL * 5,
            result_ttl=REAPER_INTERVAL * 2,
        )
    scheduler.cron(
        cron,
        func=MAINTENANCE_JOB,
        id=EXPIRY_JOB_ID,
        queue_name=QUEUE_NAME,
        use_local_timezone=False,
        timeout=MAINTENANCE_TIMEOUT,
        description="purge expired memberships and old reports",
    )


def next_run(app: Flask) -> datetime | None:
    """When the nightly job runs next (UTC), as the scheduler has it; None if unknown."""
    scheduler = get_scheduler(app, blocking=False)
    try:
        for job, at in scheduler.get_jobs(with_times=True):
            if job.id == EXPIRY_JOB_ID:
                return at.replace(tzinfo=UTC)
    except Exception:  # Redis down: the status strip just shows "unknown"
        log.warning("could not read the scheduler's jobs", exc_info=True)
    return None


def validate_cron(cron: str) -> str:
    if not croniter.is_valid(cron):
        raise ValueError(f"EXPIRY_CRON is not a valid cron string: {cron!r}")
    return cron


def run_scheduler(app: Flask, *, catch_up: bool = True) -> None:
    """Serve the schedule forever. ``catch_up`` runs the job once at start, so expiries
    missed during downtime are purged at once (each recorded at its true expiry time).

    Redis going away does not end the process (rq-scheduler's loop registers its death and
    returns on the first Redis error): it tries again after 1 s, doubling up to
    SCHEDULER_RECONNECT_MAX_SECONDS, and on each reconnection registers the schedules again
    (a Redis restarted without its data has none), so the reaper, the rollouts job and the
    nightly purge go on once Redis is back."""
    cron = validate_cron(app.config["EXPIRY_CRON"])
    scheduler = get_scheduler(app)
    longest = max(1.0, float(app.config["SCHEDULER_RECONNECT_MAX_SECONDS"]))
    delay, caught_up, connected_before = 1.0, not catch_up, False
    while True:
        try:
            if connected_before:
                scheduler.register_death()  # our own entry, if Redis kept it, so birth can be registered again
            register_schedules(scheduler, cron)
            if not caught_up:
                scheduler.enqueue_in(timedelta(seconds=0), MAINTENANCE_JOB, timeout=MAINTENANCE_TIMEOUT)
                caught_up = True
            log.info(
                "scheduler: nightly maintenance at cron %r (UTC), report reaper and scheduled rollouts "
                "every %d s, on queue %s (pid %d)",
                cron,
                REAPER_INTERVAL,
                QUEUE_NAME,
                os.getpid(),
            )
            connected_before, delay = True, 1.0
            scheduler.run()
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("scheduler: Redis unavailable (%s); trying again in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, longest)
