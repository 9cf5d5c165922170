"""A user's trait history: which keys changed, how and by whom (never the values)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from webapp.models import TraitEvent
from webapp.services.common import DbSession

MAX_ENTRIES = 10_000  # entries one answer lists (the oldest first within the range)


def trait_history(
    session: DbSession, user_id: int, start: datetime | None = None, end: datetime | None = None
) -> list[TraitEvent]:
    """The user's trait events in ``[start, end)``, oldest first (``set`` before ``deleted`` at
    one instant)."""
    query = select(TraitEvent).where(TraitEvent.user_id == user_id)
    if start is not None:
        query = query.where(TraitEvent.occurred_at >= start)
    if end is not None:
        query = query.where(TraitEvent.occurred_at < end)
    return list(session.scalars(query.order_by(TraitEvent.occurred_at, TraitEvent.id).limit(MAX_ENTRIES)))
