"""What happened to a segment: recent events and explicit member count over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select

from webapp.models import MembershipEvent, Segment
from webapp.models.enums import Action
from webapp.services.common import DbSession, utcnow
from webapp.services.segments.lifecycle import member_counts


@dataclass(frozen=True)
class DayCount:
    day: date
    members: int


def recent_events(session: DbSession, segment: Segment, limit: int = 15) -> list[MembershipEvent]:
    stmt = (
        select(MembershipEvent)
        .where(MembershipEvent.segment_id == segment.id, MembershipEvent.visible)
        .order_by(MembershipEvent.occurred_at.desc(), MembershipEvent.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def member_series(
    session: DbSession, segment: Segment, days: int = 30, now: datetime | None = None
) -> list[DayCount]:
    """Explicit members at the end of each of the last ``days`` days: today's count walked
    back through one grouped query of daily net changes (no per-day queries)."""
    now = now or utcnow()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date_trunc("day", MembershipEvent.occurred_at).label("day")  # UTC days: the session is UTC
    net = func.sum(case((MembershipEvent.action == Action.ADDED, 1), else_=-1))
    rows = session.execute(
        select(day, net)
        .where(MembershipEvent.segment_id == segment.id, MembershipEvent.occurred_at >= since)
        .group_by(day)
    )
    changes = {d.date(): n for d, n in rows}
    count = member_counts(session, [segment.id], now)[segment.id]
    series = []
    for offset in range(days):
        current = now.date() - timedelta(days=offset)
        series.append(DayCount(current, max(count, 0)))
        count -= changes.get(current, 0)
    return series[::-1]
