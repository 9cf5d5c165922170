"""Jobs status for the dashboard strip: worker alive, next TTL run, last run's result."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from flask import Flask
from rq import Worker
from sqlalchemy import select

from webapp.jobs.schedule import next_run
from webapp.jobs.tasks import EXPIRY_JOB
from webapp.models import JobRun
from webapp.platform.extensions import db
from webapp.platform.queue import get_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobsStatus:
    workers: int
    queued: int | None
    next_run: datetime | None
    last_run: JobRun | None
    redis_ok: bool = True


def jobs_status(app: Flask) -> JobsStatus:
    last = db.session.scalars(
        select(JobRun).where(JobRun.name == EXPIRY_JOB).order_by(JobRun.started_at.desc()).limit(1)
    ).first()
    queue = get_queue(app)
    try:
        return JobsStatus(Worker.count(queue=queue), queue.count, next_run(app), last)
    except Exception as exc:
        log.warning("jobs status: Redis unavailable: %s", exc)
        return JobsStatus(0, None, None, last, redis_ok=False)
