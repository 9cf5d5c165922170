"""Webhook delivery jobs (issue 27).

``pump`` sends whatever is due, many at once on a thread pool (a hanging receiver holds one
thread until its timeout, never the others; at most WEBHOOK_CONCURRENCY per subscription), records
each outcome as it comes and, once nothing is due, schedules itself for the next retry (RQ's
scheduler, which ``flask worker`` runs). ``sweep`` (every minute, rq-scheduler) wakes a pump when
something is due that no pump was woken for: an event committed while Redis was away, a delivery
whose sender was killed (its lease ran out)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from flask import current_app

from webapp.platform.extensions import db
from webapp.platform.queue import get_queue
from webapp.services.common import utcnow
from webapp.services.webhooks import delivery, outbox

log = logging.getLogger(__name__)
RUN_SECONDS = 60.0  # a pump hands over to a fresh one after this (the queue's other jobs get a turn)
POLL_SECONDS = 0.2


def pump() -> int:
    """Deliver until nothing is due (or RUN_SECONDS passed); returns the attempts made."""
    settings = delivery.Settings.from_config(current_app.config)
    queue = get_queue(current_app, blocking=True)
    queue.connection.delete(outbox.WAKE_KEY)  # events committed from now on wake another pump
    started = time.monotonic()
    attempts = 0
    in_flight: dict[Future[delivery.Outcome], delivery.Claim] = {}
    with ThreadPoolExecutor(max_workers=settings.pool, thread_name_prefix="webhook") as pool:
        while True:
            fresh = time.monotonic() - started < RUN_SECONDS
            claims = (
                delivery.claim(db.session, utcnow(), settings, settings.pool - len(in_flight))
                if fresh
                else []
            )
            db.session.commit()
            for claim in claims:
                in_flight[pool.submit(delivery.send, claim, settings)] = claim
            if not in_flight:
                break
            done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                claim = in_flight.pop(future)
                outcome = future.result()
                delivery.record(db.session, claim, outcome, utcnow(), settings)
                db.session.commit()
                attempts += 1
                log.info(
                    "webhook %s to subscription %s attempt %d: %s in %.0f ms",
                    claim.msg_id,
                    claim.subscription_id,
                    claim.attempt,
                    outcome.status or outcome.error,
                    outcome.seconds * 1000,
                )
    _schedule_next()
    return attempts


def _schedule_next() -> None:
    """Wake a pump when the next retry is due (at once if work came in meanwhile)."""
    now = utcnow()
    due = delivery.next_due(db.session)
    db.session.rollback()
    if due is None:
        return
    at = max(due, now) + timedelta(milliseconds=50)
    job_id = f"webhooks-pump-{int(at.timestamp() * 10)}"  # one per tenth of a second
    rq_queue = get_queue(current_app, blocking=True)
    if at - now < timedelta(seconds=1):
        rq_queue.enqueue(outbox.PUMP_JOB, job_id=job_id, job_timeout=600, result_ttl=60, failure_ttl=86_400)
    else:
        rq_queue.enqueue_at(
            at, outbox.PUMP_JOB, job_id=job_id, job_timeout=600, result_ttl=60, failure_ttl=86_400
        )


def sweep() -> int:
    """Wake a pump if a delivery is due (minutely; also what catches up after a Redis outage or
    a killed sender). 1 if one was queued."""
    due = delivery.anything_due(db.session, utcnow())
    db.session.rollback()
    if not due:
        return 0
    get_queue(current_app, blocking=True).enqueue(
        outbox.PUMP_JOB, job_timeout=600, result_ttl=60, failure_ttl=86_400
    )
    return 1
