"""Scheduled rollout changes: a PM plans "5% on Monday 10:00 UTC, 20% on Wednesday, 0% on
Friday 18:00". Each entry counts at read time from its ``at`` (read_path replays due ones),
is applied by the minutely job (rollout_state.apply_due) and shows in user histories and the
segment's activity at its scheduled time, with its scheduler as the actor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on

from webapp.errors import Conflict, NotFound, ValidationFailed, detail
from webapp.models import RolloutSchedule, Segment
from webapp.models.enums import SegmentEventKind
from webapp.rules import in_utc, problem_code
from webapp.services.common import DbSession, iso, utcnow
from webapp.services.rollout import buckets as rollout
from webapp.services.segments import events as activity_log
from webapp.services.segments.lifecycle import get_live_segment
from webapp.services.segments.rollout_state import (
    apply_due_locked,
    catalog_changed,
    check_future,
    lock_scope,
    refuse_schedules_of_rules,
    require_version,
)

HORIZON = timedelta(days=366)  # how far ahead a change may be scheduled


def when_or_error(at: object, now: datetime) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise ValidationFailed(
            "at must be a date and time with a timezone (use Z for UTC)",
            [detail("at", "a date and time with a timezone is required", code="date_naive")],
        )
    try:  # the one date rule (rules.in_utc): a moment of years 1..9999 in UTC
        at = in_utc(at)
    except ValueError as exc:
        raise ValidationFailed(f"at {exc}", [detail("at", str(exc), code=problem_code(exc))]) from None
    if at <= now:
        raise ValidationFailed(
            "at must be in the future",
            [detail("at", "must be in the future", code="schedule_past", value=iso(at))],
        )
    if at > now + HORIZON:
        raise ValidationFailed(
            "at must be within a year",
            [detail("at", "must be within a year", code="schedule_too_far", value=iso(at))],
        )
    return at


def add(
    session: DbSession,
    slug: str,
    at: object,
    rollout_percent: object,
    actor: str,
    now: datetime | None = None,
    expected_version: int | None = None,
) -> RolloutSchedule:
    """Schedule the segment's rollout to become ``rollout_percent`` at ``at`` (422 when it
    would not fit the segment's exclusion group once the changes before it apply)."""
    given, now = now, now or utcnow()
    when = when_or_error(at, now)
    try:
        basis_points = rollout.percent_to_basis_points(rollout_percent)
    except ValueError as exc:
        raise ValidationFailed(
            f"rollout_percent {exc}", [detail("rollout_percent", str(exc), code=problem_code(exc))]
        ) from None
    segment, locked, now = _locked(session, slug, None if given is None else now)
    refuse_schedules_of_rules(session, segment, adding_rules=False)
    require_version(session, expected_version)
    when = when_or_error(at, now)  # still in the future once the locks are held
    check_future(session, locked, now, extra=(segment.id, when, basis_points))
    entry = RolloutSchedule(
        segment_id=segment.id, at=when, rollout_basis_points=basis_points, created_by=actor, created_at=now
    )
    session.add(entry)
    session.flush()
    activity_log.record(
        session,
        segment,
        SegmentEventKind.SCHEDULE_ADDED,
        actor,
        now,
        schedule_id=entry.id,
        scheduled_for=iso(when),
        rollout_percent=basis_points / 100,
    )
    catalog_changed(session)
    return entry


def cancel(
    session: DbSession, slug: str, schedule_id: int, actor: str, now: datetime | None = None
) -> RolloutSchedule:
    """Cancel a pending change; 409 once it is in force (its time has come)."""
    segment, _, now = _locked(session, slug, now)
    entry = session.get(RolloutSchedule, schedule_id) if 0 < schedule_id < 2**63 else None
    if entry is None or entry.segment_id != segment.id:
        raise NotFound(
            "no such scheduled change",
            [detail("id", "no such scheduled change", code="unknown_schedule", value=str(schedule_id))],
        )
    if entry.cancelled_at is not None:
        return entry
    if entry.applied_at is not None or entry.at <= now:
        raise Conflict(
            f"the change scheduled at {iso(entry.at)} is already in force",
            [detail("id", "already in force", code="schedule_in_force", value=str(schedule_id))],
        )
    entry.cancelled_at, entry.cancelled_by = now, actor
    activity_log.record(
        session,
        segment,
        SegmentEventKind.SCHEDULE_CANCELLED,
        actor,
        now,
        schedule_id=entry.id,
        scheduled_for=iso(entry.at),
        rollout_percent=entry.rollout_percent,
    )
    catalog_changed(session)
    return entry


def listing(session: DbSession, segment: Segment, limit: int = 100) -> list[RolloutSchedule]:
    """The segment's scheduled changes, pending and past, in time order."""
    stmt = (
        select(RolloutSchedule)
        .where(RolloutSchedule.segment_id == segment.id)
        .order_by(RolloutSchedule.at, RolloutSchedule.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def next_steps(
    session: DbSession, segment_ids: Sequence[int], now: datetime | None = None
) -> dict[int, RolloutSchedule]:
    """Each segment's next scheduled change still ahead (pending: not cancelled, its time not
    come), by segment id; segments with none are left out. One query for a page of segments
    (DISTINCT ON the segment, along ix_rollout_schedule_segment_at)."""
    if not segment_ids:
        return {}
    stmt = (
        select(RolloutSchedule)
        .where(
            RolloutSchedule.segment_id.in_(list(segment_ids)),
            RolloutSchedule.cancelled_at.is_(None),
            RolloutSchedule.applied_at.is_(None),
            RolloutSchedule.at > (now or utcnow()),
        )
        .order_by(RolloutSchedule.segment_id, RolloutSchedule.at, RolloutSchedule.id)
        .ext(distinct_on(RolloutSchedule.segment_id))
    )
    return {entry.segment_id: entry for entry in session.scalars(stmt)}


def status(entry: RolloutSchedule, now: datetime | None = None) -> str:
    """pending, applied (in force) or cancelled; a due entry the job has not reached yet is
    already in force, exactly as every read sees it."""
    if entry.cancelled_at is not None:
        return "cancelled"
    return "applied" if entry.applied_at is not None or entry.at <= (now or utcnow()) else "pending"


def _locked(
    session: DbSession, slug: str, now: datetime | None
) -> tuple[Segment, dict[int, Segment], datetime]:
    """The live segment, its scope locked and its due changes applied (so this change lands
    after them, in time order), and the time the change happens: the clock reads judge due
    changes by, read once the locks are held (``now``: a fixed clock)."""
    segment = get_live_segment(session, slug)
    locked = lock_scope(session, segment.id)
    if segment.id not in locked:
        raise NotFound(
            f"segment {slug} does not exist",
            [detail("slug", "no such segment", code="unknown_segment", value=slug, slug=slug)],
        )
    now = now or utcnow()
    apply_due_locked(session, locked, now)
    return segment, locked, now
