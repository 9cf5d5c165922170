"""Segment lifecycle: create, list, read, update (description, rollout), delete; members."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from webapp.errors import Conflict, NotFound, ValidationFailed, detail
from webapp.models import CatalogVersion, Membership, RolloutChange, RolloutExclusion, Segment
from webapp.models.enums import Reason
from webapp.rules import MAX_DESCRIPTION
from webapp.services import rollout
from webapp.services.common import DbSession, slug_problem, utcnow

UNSET: object = object()


@dataclass(frozen=True)
class SegmentStats:
    members: int  # explicit, not expired
    exclusions: int  # users explicitly removed from the rollout


def _slug_or_error(slug: object) -> str:
    if (problem := slug_problem(slug)) is not None:
        raise ValidationFailed(problem, [detail("slug", problem, value=str(slug)[:80])])
    assert isinstance(slug, str)
    return slug


def _description_or_error(description: object) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationFailed("description must be a string", [detail("description", "must be a string")])
    description = description.strip()
    if "\x00" in description:
        raise ValidationFailed("description must not contain NUL characters",
                               [detail("description", "contains a NUL character")])
    if len(description) > MAX_DESCRIPTION:
        problem = f"at most {MAX_DESCRIPTION} characters"
        raise ValidationFailed(f"description: {problem}", [detail("description", problem)])
    return description


def _basis_points_or_error(percent: object) -> int:
    if percent is None:
        return 0
    try:
        return rollout.percent_to_basis_points(percent)
    except ValueError as exc:
        raise ValidationFailed(f"rollout_percent {exc}", [detail("rollout_percent", str(exc))]) from None


def get_live_segment(session: DbSession, slug: str, lock: Literal["share", "update"] | None = None) -> Segment:
    """The live segment with this slug, optionally row-locked; NotFound otherwise."""
    _slug_or_error(slug)
    stmt = select(Segment).where(Segment.slug == slug, Segment.is_live)
    if lock:
        stmt = stmt.with_for_update(read=lock == "share")
    segment = session.scalars(stmt).first()
    if segment is None:
        raise NotFound(f"segment {slug} does not exist", [detail("slug", "no such segment", value=slug)])
    return segment


def list_segments(session: DbSession, q: str = "", page: int = 1, per_page: int = 50) -> tuple[list[Segment], int]:
    """Live segments whose slug or description contains ``q``, newest first, with the total."""
    stmt = select(Segment).where(Segment.is_live)
    if "\x00" in q:  # PostgreSQL text cannot hold one
        raise ValidationFailed("the search must not contain NUL characters", [detail("q", "contains a NUL")])
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Segment.slug.ilike(pattern, escape="\\"),
                              Segment.description.ilike(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.order_by(Segment.created_at.desc(), Segment.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
    ).all()
    return list(items), total


def member_counts(session: DbSession, segment_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """Explicit non-expired member counts for several segments in one grouped query."""
    if not segment_ids:
        return {}
    now = now or utcnow()
    rows = session.execute(
        select(Membership.segment_id, func.count())
        .where(Membership.segment_id.in_(segment_ids), Membership.live_at(now))
        .group_by(Membership.segment_id)
    )
    counts = dict.fromkeys(segment_ids, 0)
    counts.update({sid: n for sid, n in rows.all()})
    return counts


def segment_stats(session: DbSession, segment: Segment) -> SegmentStats:
    members = member_counts(session, [segment.id])[segment.id]
    exclusions = session.scalar(
        select(func.count()).select_from(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id))
    return SegmentStats(members, exclusions or 0)


def create_segment(session: DbSession, slug: object, description: object = None, rollout_percent: object = None,
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
        _record_rollout(session, segment, 0, segment.rollout_basis_points, Reason.ROLLOUT, now)
    catalog_changed(session)
    return segment


def update_segment(session: DbSession, slug: str, description: object = UNSET, rollout_percent: object = UNSET,
                   now: datetime | None = None) -> tuple[Segment, bool]:
    """Change description and/or rollout (validated together before either changes);
    returns the segment and whether the rollout changed."""
    now = now or utcnow()
    new_description = None if description is UNSET else _description_or_error(description)
    new_bp = None if rollout_percent is UNSET else _basis_points_or_error(rollout_percent)
    segment = get_live_segment(session, slug, lock="update")
    if new_description is not None:
        segment.description = new_description
    rollout_changed = new_bp is not None and new_bp != segment.rollout_basis_points
    if new_bp is not None and rollout_changed:
        _record_rollout(session, segment, segment.rollout_basis_points, new_bp, Reason.ROLLOUT, now)
        segment.rollout_basis_points = new_bp
        catalog_changed(session)
    session.flush()
    return segment, rollout_changed


def retire_segment(session: DbSession, slug: str, now: datetime) -> tuple[Segment, int]:
    """Soft-delete a segment: it leaves the catalog (and every read) when this commits, and
    its slug is free again. Returns it with its live explicit member count; removing their
    rows is bulk.delete_segment's job."""
    segment = get_live_segment(session, slug, lock="update")  # waits for writers holding a share lock
    left = member_counts(session, [segment.id], now)[segment.id]
    if segment.rollout_basis_points:
        _record_rollout(session, segment, segment.rollout_basis_points, 0, Reason.SEGMENT_DELETED, now)
        segment.rollout_basis_points = 0
    segment.deleted_at = now
    session.flush()
    catalog_changed(session)
    return segment, left


def catalog_changed(session: DbSession) -> None:
    """Mark the segment catalog changed by this transaction (the read path revalidates
    against this version; see read_path)."""
    session.execute(update(CatalogVersion).where(CatalogVersion.id == 1)
                    .values(version=CatalogVersion.version + 1))


def _record_rollout(session: DbSession, segment: Segment, from_bp: int, to_bp: int, reason: Reason,
                    now: datetime) -> None:
    session.add(RolloutChange(segment_id=segment.id, from_bp=from_bp, to_bp=to_bp, reason=reason, changed_at=now))


def list_members(session: DbSession, segment: Segment, *, after: int = 0, limit: int = 50,
                 user_id: int | None = None, now: datetime | None = None) -> list[Membership]:
    """Explicit, live members ordered by user id; keyset pagination via ``after``."""
    stmt = (select(Membership)
            .where(Membership.segment_id == segment.id, Membership.user_id > after,
                   Membership.live_at(now or utcnow()))
            .order_by(Membership.user_id).limit(limit))
    if user_id is not None:
        stmt = stmt.where(Membership.user_id == user_id)
    return list(session.scalars(stmt))
