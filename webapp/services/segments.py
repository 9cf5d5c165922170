"""Segment lifecycle: create, list, read, update (description, rollout), delete."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import bindparam, delete, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from webapp.errors import Conflict, NotFound, ValidationFailed, detail
from webapp.models import Membership, RolloutChange, RolloutExclusion, Segment
from webapp.models.types import UTCDateTime
from webapp.services import invalidation, rollout
from webapp.services.common import slug_problem, utcnow

MAX_DESCRIPTION = 2000
UNSET: object = object()


@dataclass(frozen=True)
class SegmentStats:
    members: int  # explicit, not expired
    exclusions: int  # users explicitly removed from the rollout


def _slug_or_error(slug) -> str:
    if (problem := slug_problem(slug)) is not None:
        raise ValidationFailed(problem, [detail("slug", problem, value=str(slug)[:80])])
    return slug


def _description_or_error(description) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationFailed("description must be a string", [detail("description", "must be a string")])
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        problem = f"at most {MAX_DESCRIPTION} characters"
        raise ValidationFailed(f"description: {problem}", [detail("description", problem)])
    return description


def _basis_points_or_error(percent) -> int:
    if percent is None:
        return 0
    try:
        return rollout.percent_to_basis_points(percent)
    except ValueError as exc:
        raise ValidationFailed(f"rollout_percent {exc}", [detail("rollout_percent", str(exc))]) from None


def get_live_segment(session: Session, slug: str, lock: Literal["share", "update"] | None = None) -> Segment:
    """The live segment with this slug, optionally row-locked; NotFound otherwise."""
    _slug_or_error(slug)
    stmt = select(Segment).where(Segment.slug == slug, Segment.deleted_at.is_(None))
    if lock:
        stmt = stmt.with_for_update(read=lock == "share")
    segment = session.scalars(stmt).first()
    if segment is None:
        raise NotFound(f"segment {slug} does not exist", [detail("slug", "no such segment", value=slug)])
    return segment


def list_segments(session: Session, q: str = "", page: int = 1, per_page: int = 50) -> tuple[list[Segment], int]:
    """Live segments whose slug or description contains ``q``, newest first, with the total."""
    stmt = select(Segment).where(Segment.deleted_at.is_(None))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Segment.slug.ilike(pattern, escape="\\"),
                              Segment.description.ilike(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    items = session.scalars(
        stmt.order_by(Segment.created_at.desc(), Segment.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
    ).all()
    return list(items), total


def member_counts(session: Session, segment_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """Explicit non-expired member counts for several segments in one grouped query."""
    if not segment_ids:
        return {}
    now = now or utcnow()
    rows = session.execute(
        select(Membership.segment_id, func.count())
        .where(Membership.segment_id.in_(segment_ids),
               or_(Membership.expires_at.is_(None), Membership.expires_at > now))
        .group_by(Membership.segment_id)
    )
    counts = dict.fromkeys(segment_ids, 0)
    counts.update(dict(rows.all()))
    return counts


def segment_stats(session: Session, segment: Segment) -> SegmentStats:
    members = member_counts(session, [segment.id])[segment.id]
    exclusions = session.scalar(
        select(func.count()).select_from(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id))
    return SegmentStats(members, exclusions)


def create_segment(session: Session, slug, description=None, rollout_percent=None,
                   now: datetime | None = None) -> Segment:
    """Create a live segment with a fresh salt; Conflict when the slug is taken."""
    now = now or utcnow()
    segment = Segment(
        slug=_slug_or_error(slug),
        description=_description_or_error(description),
        rollout_basis_points=_basis_points_or_error(rollout_percent),
        salt=rollout.new_salt(),
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(segment)
            session.flush()
    except IntegrityError:
        raise Conflict(f"segment {slug} already exists",
                       [detail("slug", "a live segment has this slug", value=slug)]) from None
    if segment.rollout_basis_points:
        _record_rollout(session, segment, 0, segment.rollout_basis_points, "rollout", now)
        invalidation.everyone_changed()
    return segment


def update_segment(session: Session, slug: str, description=UNSET, rollout_percent=UNSET,
                   now: datetime | None = None) -> tuple[Segment, bool]:
    """Change description and/or rollout; returns the segment and whether rollout changed."""
    now = now or utcnow()
    segment = get_live_segment(session, slug, lock="update")
    if description is not UNSET:
        segment.description = _description_or_error(description)
    rollout_changed = False
    if rollout_percent is not UNSET:
        new_bp = _basis_points_or_error(rollout_percent)
        if new_bp != segment.rollout_basis_points:
            _record_rollout(session, segment, segment.rollout_basis_points, new_bp, "rollout", now)
            segment.rollout_basis_points = new_bp
            rollout_changed = True
            invalidation.everyone_changed()
    session.flush()
    return segment, rollout_changed


def delete_segment(session: Session, slug: str, reason: str = "api", actor: str = "",
                   now: datetime | None = None) -> int:
    """Soft-delete a segment; every member leaves with a ``segment_deleted`` event.

    Returns the number of explicit members that left. The slug is free again at once.
    """
    now = now or utcnow()
    segment = get_live_segment(session, slug, lock="update")  # waits for writers holding a share lock
    params = {"now": now, "sid": segment.id, "slug": segment.slug, "actor": actor}
    # Rows already expired (purge not run yet) left at their expiry, the rest leave now.
    session.execute(text(
        "INSERT INTO membership_events "
        "(user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
        "SELECT user_id, segment_id, :slug, 'removed', "
        "CASE WHEN expires_at <= :now THEN 'ttl' ELSE 'segment_deleted' END, "
        "CASE WHEN expires_at <= :now THEN expires_at ELSE :now END, "
        "CASE WHEN expires_at <= :now THEN 'system' ELSE :actor END "
        "FROM memberships WHERE segment_id = :sid").bindparams(_ts("now")), params)
    left = session.scalar(text(
        "SELECT count(*) FROM memberships WHERE segment_id = :sid "
        "AND (expires_at IS NULL OR expires_at > :now)").bindparams(_ts("now")), params)
    session.execute(delete(Membership).where(Membership.segment_id == segment.id))
    session.execute(delete(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id))
    if segment.rollout_basis_points:
        _record_rollout(session, segment, segment.rollout_basis_points, 0, "segment_deleted", now)
        segment.rollout_basis_points = 0
    segment.deleted_at = now
    session.flush()
    invalidation.everyone_changed()
    return left


def _ts(name: str):
    return bindparam(name, type_=UTCDateTime)


def _record_rollout(session: Session, segment: Segment, from_bp: int, to_bp: int, reason: str,
                    now: datetime) -> None:
    session.add(RolloutChange(segment_id=segment.id, from_bp=from_bp, to_bp=to_bp, reason=reason, changed_at=now))
