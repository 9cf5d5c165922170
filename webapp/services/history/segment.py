"""What happened to a segment: recent events, explicit member count and rollout over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import case, func, select

from webapp.models import MembershipEvent, RolloutChange, Segment
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


def rollout_series(session: DbSession, segment: Segment, days: list[date]) -> list[float]:
    """The rollout percentage at the end of each of ``days`` (ascending), walked back from
    today's through the rollout changes since the first of them."""
    if not days:
        return []
    since = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    changes = session.execute(
        select(RolloutChange.changed_at, RolloutChange.from_bp)
        .where(RolloutChange.segment_id == segment.id, RolloutChange.changed_at >= since)
        .order_by(RolloutChange.changed_at.desc(), RolloutChange.id.desc())
    ).all()
    current, result, index = segment.rollout_basis_points, [], 0
    for day in reversed(days):
        while index < len(changes) and changes[index][0].date() > day:
            current = changes[index][1]  # before that change
            index += 1
        result.append(current / 100)
    return result[::-1]
