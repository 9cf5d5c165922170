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

MEMBERSHIP_BATCH = 1000  # changes per membership.changed delivery (WEBHOOK_MEMBERSHIP_BATCH)
_ISO = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""

# The per-user changes of one membership statement (``changes``: a CTE with the history
# columns and ``expires_at``), as ``membership.changed`` events of up to :wh_batch changes each,
# with one delivery per subscription that wants them: more CTEs of that same statement, so the
# events commit with the history rows or not at all. Nobody subscribed: nothing is written
# (``wh_changes`` is empty, the window and the inserts see no row). Only changes readers saw
# (``visible``) are sent. The statement reads how many events it wrote with OUTBOX_WRITTEN.
MEMBERSHIP_OUTBOX = """
wh_subs AS (
    SELECT s.id FROM webhook_subscriptions s
    WHERE s.status IN ('active', 'paused') AND '{type}' = ANY(s.event_types)
),
wh_changes AS (
    SELECT c.*, (row_number() OVER () - 1) / CAST(:wh_batch AS int) AS batch
    FROM {{changes}} c WHERE c.visible AND EXISTS (SELECT 1 FROM wh_subs)
),
wh_events AS (
    INSERT INTO webhook_events (msg_id, type, payload, occurred_at)
    SELECT 'msg_' || replace(CAST(gen_random_uuid() AS text), '-', ''), '{type}',
        CAST(json_build_object('type', '{type}', 'timestamp', {last}, 'data', json_build_object(
            'occurred_at', {last}, 'count', count(*),
            'changes', json_agg(CASE WHEN expires_at IS NULL THEN json_build_object(
                'user_id', user_id, 'segment', segment_slug, 'action', action, 'reason', reason,
                'occurred_at', {at}) ELSE json_build_object(
                'user_id', user_id, 'segment', segment_slug, 'action', action, 'reason', reason,
                'occurred_at', {at}, 'expires_at', {expires}) END))) AS jsonb),
        max(occurred_at)
    FROM wh_changes GROUP BY batch
    RETURNING id
),
wh_deliveries AS (
    INSERT INTO webhook_deliveries (event_id, subscription_id, state, attempts, next_attempt_at, created_at)
    SELECT e.id, s.id, 'pending', 0, clock_timestamp(), clock_timestamp() FROM wh_events e CROSS JOIN wh_subs s
)""".format(
    type="membership.changed",
    last=_ISO.format("max(occurred_at)"),
    at=_ISO.format("occurred_at"),
    expires=_ISO.format("expires_at"),
)
OUTBOX_WRITTEN = "(SELECT count(*) FROM wh_events)"


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


def wake_after_commit(written: int) -> None:
    """Queue the delivery job once the transaction commits if a statement wrote ``written`` events."""
    if written:
        after_commit(wake)


def wake() -> None:
    """Queue the delivery job unless one is queued or running (the wake key says so: set here,
    held by a running pump). Never raises: with Redis away the sweep sends what is due once it is back."""
    try:
        queue = get_queue()
        if queue.connection.set(WAKE_KEY, "1", nx=True, ex=30):
            queue.enqueue(PUMP_JOB, job_timeout=600, result_ttl=60, failure_ttl=86_400)
    except Exception as exc:  # Redis away: the sweep will find the deliveries
        log.warning("webhook delivery not queued now (%s); the sweep will send it", type(exc).__name__)
