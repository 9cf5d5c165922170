"""Webhook delivery jobs (issue 27).

``pump`` sends whatever is due, many at once on a thread pool (a hanging receiver holds one
thread until its timeout, never the others; at most WEBHOOK_CONCURRENCY per subscription), records
each outcome as it comes and, once nothing is due, schedules itself for the next retry (RQ's
scheduler, which ``flask worker`` runs). ``sweep`` (every minute, rq-scheduler) wakes a pump when
something is due that no pump was woken for: an event committed while Redis was away, a delivery
whose sender was killed (its lease ran out)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError

from webapp.platform.extensions import db
from webapp.platform.queue import get_queue
from webapp.services.common import utcnow
from webapp.services.webhooks import delivery, outbox

log = logging.getLogger(__name__)
RUN_SECONDS = 60.0  # a pump hands over to a fresh one after this (the queue's other jobs get a turn)
LINGER_SECONDS = 2.0  # a pump with nothing to do waits this long for more before it ends
POLL_SECONDS = 0.05  # how often a running pump looks for new deliveries
KEY_SECONDS = 30  # the wake key a running pump holds (refreshed each look; a killed pump's expires)


def pump() -> int:
    """Deliver until nothing is due for LINGER_SECONDS (or RUN_SECONDS passed: a fresh pump takes
    over); returns the attempts made. While it runs it holds the wake key, so commits do not
    queue more pumps; it lets the key go and looks once more before ending (a commit that saw
    the key is then found by that last look; one after it queues a new pump)."""
    settings = delivery.Settings.from_config(current_app.config)
    redis = get_queue(current_app, blocking=True).connection
    started = idle_since = time.monotonic()
    attempts = 0
    in_flight: dict[Future[delivery.Outcome], delivery.Claim] = {}
    with ThreadPoolExecutor(max_workers=settings.pool, thread_name_prefix="webhook") as pool:
        while True:
            _quietly(redis.set, outbox.WAKE_KEY, "running", ex=KEY_SECONDS)
            fresh = time.monotonic() - started < RUN_SECONDS
            if fresh:
                _claim(pool, in_flight, settings)
            if not in_flight:
                if fresh and time.monotonic() - idle_since < LINGER_SECONDS:
                    time.sleep(POLL_SECONDS)
                    continue
                _quietly(redis.delete, outbox.WAKE_KEY)
                if fresh and _claim(pool, in_flight, settings):
                    continue
                break
            done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                _record(in_flight.pop(future), future.result(), settings)
                attempts += 1
            idle_since = time.monotonic()
    if time.monotonic() - started >= RUN_SECONDS:
        outbox.wake()  # hand over to a fresh pump
    else:
        _schedule_next()
    return attempts


def _quietly(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    """A wake-key write; Redis away does not stop the deliveries (they need only the database)."""
    with contextlib.suppress(RedisError):
        call(*args, **kwargs)


def _claim(
    pool: ThreadPoolExecutor,
    in_flight: dict[Future[delivery.Outcome], delivery.Claim],
    settings: delivery.Settings,
) -> list[delivery.Claim]:
    claims = delivery.claim(db.session, utcnow(), settings, settings.pool - len(in_flight))
    db.session.commit()
    for claim in claims:
        in_flight[pool.submit(delivery.send, claim, settings)] = claim
    return claims


def _record(claim: delivery.Claim, outcome: delivery.Outcome, settings: delivery.Settings) -> None:
    delivery.record(db.session, claim, outcome, utcnow(), settings)
    db.session.commit()
    log.info(
        "webhook %s to subscription %s attempt %d: %s in %.0f ms",
        claim.msg_id,
        claim.subscription_id,
        claim.attempt,
        outcome.status or outcome.error,
        outcome.seconds * 1000,
    )


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
