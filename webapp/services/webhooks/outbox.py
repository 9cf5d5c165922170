"""The outbox: an event is written in the transaction of the change it tells about, with one
pending delivery per subscription (active or paused) that wants its type (an event no
subscription wants is not written). Once the transaction
commits the delivery job is woken; if Redis is away the minutely sweep finds the deliveries."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text

from webapp.http.transaction import after_commit
from webapp.platform.queue import get_queue
from webapp.services.common import DbSession, utcnow

log = logging.getLogger(__name__)
PUMP_JOB = "webapp.jobs.webhooks.pump"
WAKE_KEY = "webhooks:wake"

_EMIT = """
    WITH wanting AS (
        SELECT s.id FROM webhook_subscriptions s WHERE {which}
    ), event AS (
        INSERT INTO webhook_events (msg_id, type, payload, occurred_at)
        SELECT :msg_id, :type, CAST(:payload AS jsonb), :at
        WHERE EXISTS (SELECT 1 FROM wanting)
        RETURNING id
    )
    INSERT INTO webhook_deliveries (event_id, subscription_id, state, attempts, next_attempt_at, created_at)
    SELECT event.id, wanting.id, 'pending', 0, :at, :at
    FROM event, wanting
    """
_TO_SUBSCRIBERS = text(_EMIT.format(which="s.status IN ('active', 'paused') AND :type = ANY(s.event_types)"))
_TO_ONE = text(_EMIT.format(which="s.id = :only"))  # a test event: one subscription, whatever its types


def purge_delivered(session: DbSession, before: datetime) -> int:
    """Forget deliveries delivered before ``before``, then events created before it that have no
    delivery left (pending ones are never dropped: never lost); returns the events gone."""
    session.execute(
        text("DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < :before"),
        {"before": before},
    )
    gone = session.execute(
        text(
            "DELETE FROM webhook_events e WHERE e.occurred_at < :before"
            " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)"
        ),
        {"before": before},
    )
    return int(gone.rowcount)  # type: ignore[attr-defined]


def new_msg_id() -> str:
    return "msg_" + uuid.uuid4().hex


def payload(event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


def emit(
    session: DbSession,
    event_type: str,
    data: dict[str, Any],
    *,
    at: datetime | None = None,
    only_subscription: int | None = None,
) -> str:
    """Write the event and its deliveries in the caller's transaction; returns its webhook-id."""
    at = at or utcnow()
    msg_id = new_msg_id()
    body = json.dumps(payload(event_type, at, data), default=str)
    params: dict[str, Any] = {"msg_id": msg_id, "type": event_type, "payload": body, "at": at}
    if only_subscription is None:
        written = session.execute(_TO_SUBSCRIBERS, params)
    else:
        written = session.execute(_TO_ONE, {**params, "only": only_subscription})
    if written.rowcount:  # type: ignore[attr-defined]  # nobody wants it: nothing written, nobody woken
        after_commit(wake)  # (several in one transaction: the Redis key lets one through)
    return msg_id


def wake() -> None:
    """Queue the delivery job unless one is queued or running (the wake key says so: set here,
    held by a running pump). Never raises: with Redis away the sweep sends what is due once it is back."""
    try:
        queue = get_queue()
        if queue.connection.set(WAKE_KEY, "1", nx=True, ex=30):
            queue.enqueue(PUMP_JOB, job_timeout=600, result_ttl=60, failure_ttl=86_400)
    except Exception as exc:  # Redis away: the sweep will find the deliveries
        log.warning("webhook delivery not queued now (%s); the sweep will send it", type(exc).__name__)
