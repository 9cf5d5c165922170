"""What happened to a segment: recent events and explicit member count over time."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from webapp.models import MembershipEvent, Segment
from webapp.services.common import utcnow
from webapp.services.segments import member_counts


@dataclass(frozen=True)
class DayCount:
    day: date
    members: int


def recent_events(session: Session, segment: Segment, limit: int = 15) -> list[MembershipEvent]:
    stmt = (select(MembershipEvent).where(MembershipEvent.segment_id == segment.id)
            .order_by(MembershipEvent.occurred_at.desc(), MembershipEvent.id.desc()).limit(limit))
    return list(session.scalars(stmt))


def _day(column, dialect: str):
    return func.date_trunc("day", column) if dialect == "postgresql" else func.date(column)


def _as_date(value) -> date:
    """A grouped day as a date: PostgreSQL gives a datetime, SQLite a 'YYYY-MM-DD' string."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def member_series(session: Session, segment: Segment, days: int = 30, now: datetime | None = None) -> list[DayCount]:
    """Explicit members at the end of each of the last ``days`` days: today's count walked
    back through one grouped query of daily net changes (no per-day queries)."""
    now = now or utcnow()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = _day(MembershipEvent.occurred_at, session.get_bind().dialect.name).label("day")
    net = func.sum(case((MembershipEvent.action == "added", 1), else_=-1))
    rows = session.execute(select(day, net).where(MembershipEvent.segment_id == segment.id,
                                                  MembershipEvent.occurred_at >= since).group_by(day))
    changes = {_as_date(d): n for d, n in rows}
    count = member_counts(session, [segment.id], now)[segment.id]
    series = []
    for offset in range(days):
        current = now.date() - timedelta(days=offset)
        series.append(DayCount(current, max(count, 0)))
        count -= changes.get(current, 0)
    return series[::-1]
