"""A segment's activity log: one row per segment-level change (created, description, rollout
or group changed, scheduled changes, a bulk import or removal as one event with its count,
deleted), with the actor and time. Written in the changing transaction, and with it the
webhook event it is, if any (services.webhooks: the outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from webapp.models import Segment, SegmentEvent
from webapp.models.enums import SegmentEventKind
from webapp.services.common import DbSession, utcnow
from webapp.services.webhooks import catalogue, outbox


def record(
    session: DbSession,
    segment: Segment,
    kind: SegmentEventKind,
    actor: str,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Append one entry (``detail``: JSON-able facts such as from/to or a count), and its
    webhook event to the outbox."""
    at = at or utcnow()
    session.add(
        SegmentEvent(
            segment_id=segment.id,
            segment_slug=segment.slug,
            kind=kind,
            detail=detail,
            actor=actor,
            occurred_at=at,
        )
    )
    event = catalogue.from_segment_event(str(kind), segment.slug, actor, at, detail)
    if event is not None:
        outbox.emit(session, event[0], event[1], at=at)


def activity(
    session: DbSession, segment: Segment, *, limit: int = 50, before: int | None = None
) -> list[SegmentEvent]:
    """Newest first; ``before`` (an event id from the previous page) pages back."""
    stmt = select(SegmentEvent).where(SegmentEvent.segment_id == segment.id)
    if before is not None:
        stmt = stmt.where(SegmentEvent.id < before)
    return list(session.scalars(stmt.order_by(SegmentEvent.id.desc()).limit(limit)))
