"""Who is in which segment: the read path, atomic per-user changes, bulk adds, expiry."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import BigInteger, bindparam, false, null, or_, select, true
from sqlalchemy.orm import Session

from webapp.errors import ValidationFailed, detail
from webapp.models import Membership, RolloutExclusion, Segment
from webapp.models.types import UTCDateTime
from webapp.services import invalidation, membership_sql, rollout
from webapp.services.common import MAX_USER_ID, check_user_id, expiry, slug_problem, user_id_problem, utcnow
from webapp.services.segments import get_live_segment


@dataclass(frozen=True)
class AddSpec:
    """One entry of ``add``: a slug with an optional per-item TTL or absolute expiry."""

    slug: str
    ttl_seconds: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ActiveSegment:
    slug: str
    source: str  # "explicit" | "rollout"
    expires_at: datetime | None


@dataclass
class ChangeResult:
    user_id: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_members: list[str] = field(default_factory=list)
    changed_segment_ids: set[int] = field(default_factory=set)


@dataclass
class BulkResult:
    segment: str
    received: int
    added: int
    updated: int
    unchanged: int


# -- read path -----------------------------------------------------------------------------

def _build_active_query():
    """The read-path statement, built once: explicit rows UNION ALL live rollout segments."""
    user, now = bindparam("user_id", type_=BigInteger), bindparam("now", type_=UTCDateTime)
    explicit = (
        select(Segment.slug, Segment.salt, Segment.rollout_basis_points,
               Membership.expires_at, true().label("explicit"))
        .join(Segment, Segment.id == Membership.segment_id)
        .where(Membership.user_id == user, Segment.deleted_at.is_(None),
               or_(Membership.expires_at.is_(None), Membership.expires_at > now))
    )
    excluded = select(RolloutExclusion.segment_id).where(
        RolloutExclusion.user_id == user, RolloutExclusion.segment_id == Segment.id)
    rollouts = (
        select(Segment.slug, Segment.salt, Segment.rollout_basis_points,
               null().label("expires_at"), false().label("explicit"))
        .where(Segment.deleted_at.is_(None), Segment.rollout_basis_points > 0, ~excluded.exists())
    )
    return explicit.union_all(rollouts)


_ACTIVE_QUERY = _build_active_query()


def active_segments(session: Session, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """Segments the user is in right now, sorted by slug, in one round trip.

    Explicit memberships count until ``expires_at`` (exclusive) whether or not the purge
    has run; rollout segments count when the user's bucket is under the percentage and
    the user was not explicitly removed from that segment.
    """
    check_user_id(user_id)
    now = now or utcnow()
    found: dict[str, ActiveSegment] = {}
    for slug, salt, basis_points, expires_at, is_explicit in session.execute(
            _ACTIVE_QUERY, {"user_id": user_id, "now": now}):
        if is_explicit:
            found[slug] = ActiveSegment(slug, "explicit", expires_at)
        elif slug not in found and rollout.in_rollout(salt, user_id, basis_points):
            found[slug] = ActiveSegment(slug, "rollout", None)
    return [found[slug] for slug in sorted(found)]


# -- per-user change -----------------------------------------------------------------------

def change_user_segments(
    session: Session,
    user_id: int,
    add: Sequence[AddSpec] = (),
    delete: Sequence[str] = (),
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: str = "api",
    actor: str = "",
    now: datetime | None = None,
) -> ChangeResult:
    """Add and remove a user's segments atomically; all or nothing.

    Any invalid item (bad or unknown slug, a slug in both lists or twice, a past expiry)
    rejects the whole request with every offending item in ``details``. Re-adding a
    segment updates its expiry; removing one the user is not in is reported, not an error.
    Removing a user who is in through a rollout records an exclusion that overrides it.
    History rows are stamped by the database clock unless ``now`` is given.
    """
    at, now = now, now or utcnow()
    problems: list[dict] = []
    if (problem := user_id_problem(user_id)) is not None:
        problems.append(detail("user_id", problem))
    default_expiry, found = expiry(ttl_seconds, expires_at, now)
    problems += found
    limit = current_app.config["MAX_ITEMS_PER_REQUEST"]
    if len(add) + len(delete) > limit:
        raise ValidationFailed(f"at most {limit} items in add and del together",
                               [detail("add", f"{len(add) + len(delete)} items given")])
    if not add and not delete:
        problems.append(detail("add", "give at least one slug in add or del"))

    expiries: dict[str, datetime | None] = {}
    for i, spec in enumerate(add):
        where = f"add[{i}]"
        if (problem := slug_problem(spec.slug)) is not None:
            problems.append(detail(where, problem, slug=str(spec.slug)[:80]))
            continue
        if spec.slug in expiries:
            problems.append(detail(where, "slug listed twice in add", slug=spec.slug))
            continue
        own, found = expiry(spec.ttl_seconds, spec.expires_at, now, where)
        problems += found
        has_own = spec.ttl_seconds is not None or spec.expires_at is not None
        expiries[spec.slug] = own if has_own else default_expiry
    deleting: list[str] = []
    for i, slug in enumerate(delete):
        where = f"del[{i}]"
        if (problem := slug_problem(slug)) is not None:
            problems.append(detail(where, problem, slug=str(slug)[:80]))
        elif slug in deleting:
            problems.append(detail(where, "slug listed twice in del", slug=slug))
        elif slug in expiries:
            problems.append(detail(where, "slug is in both add and del", slug=slug))
        else:
            deleting.append(slug)
    if problems:
        raise ValidationFailed("the request was not applied: fix the listed items", problems)

    segments = _lock_live_segments(session, [*expiries, *deleting])
    unknown = [s for s in [*expiries, *deleting] if s not in segments]
    if unknown:
        raise ValidationFailed(
            "the request was not applied: unknown segments",
            [detail("add" if s in expiries else "del", "no such segment", slug=s) for s in unknown],
        )

    result = ChangeResult(user_id)
    # A stale row (expired, not yet purged) ends at its expiry first, so a re-add is a new add.
    membership_sql.expire_batch(session, now, limit, user_id=user_id)
    if expiries:
        counts = membership_sql.upsert(
            session, user_id, {segments[slug].id: until for slug, until in expiries.items()},
            now, reason, actor, at=at)
        for slug in expiries:
            sid = segments[slug].id
            bucket = (result.added if sid in counts.added
                      else result.updated if sid in counts.updated else result.unchanged)
            bucket.append(slug)
    if deleting:
        ids = [segments[slug].id for slug in deleting]
        in_rollout = [segments[s].id for s in deleting
                      if rollout.in_rollout(segments[s].salt, user_id, segments[s].rollout_basis_points)]
        gone = membership_sql.remove(session, user_id, ids, in_rollout, now, reason, actor, at=at)
        for slug in deleting:
            (result.removed if segments[slug].id in gone else result.not_members).append(slug)
    result.changed_segment_ids = {segments[s].id for s in [*result.added, *result.updated, *result.removed]}
    if result.changed_segment_ids:
        invalidation.user_changed(user_id)
    return result


def _lock_live_segments(session: Session, slugs: Iterable[str]) -> dict[str, Segment]:
    """Live segments by slug, share-locked so none is deleted while we write (id order)."""
    slugs = list(slugs)
    if not slugs:
        return {}
    stmt = (select(Segment).where(Segment.slug.in_(slugs), Segment.deleted_at.is_(None))
            .order_by(Segment.id).with_for_update(read=True))
    return {s.slug: s for s in session.scalars(stmt)}


# -- bulk add ------------------------------------------------------------------------------

def bulk_add(
    session: Session,
    slug: str,
    user_ids: Sequence[int],
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: str = "api",
    actor: str = "",
    now: datetime | None = None,
) -> BulkResult:
    """Add many users to one segment in a single set-based statement."""
    at, now = now, now or utcnow()
    limit = current_app.config["MAX_BULK_IDS"]
    if not user_ids:
        raise ValidationFailed("user_ids must not be empty", [detail("user_ids", "empty list")])
    if len(user_ids) > limit:
        raise ValidationFailed(f"at most {limit} user ids per request",
                               [detail("user_ids", f"{len(user_ids)} given")])
    bad = []
    if not all(type(u) is int for u in user_ids) or min(user_ids) < 1 or max(user_ids) > MAX_USER_ID:
        bad = [detail(f"user_ids[{i}]", p, value=str(u)[:40])
               for i, u in enumerate(user_ids) if (p := user_id_problem(u)) is not None]
    until, found = expiry(ttl_seconds, expires_at, now)
    if bad or found:
        raise ValidationFailed("no user was added: fix the listed items", (bad[:100] + found))
    # Exclusive on the segment row: per-user writers to it wait (reads never do).
    segment = get_live_segment(session, slug, lock="update")
    membership_sql.expire_batch(session, now, limit, segment_id=segment.id)
    added, updated = membership_sql.bulk_insert(session, user_ids, segment.id, segment.slug, until, now,
                                                reason, actor, at=at)
    if added or updated:
        invalidation.everyone_changed()
    return BulkResult(segment.slug, len(user_ids), added, updated, len(set(user_ids)) - added - updated)


# -- members of a segment ------------------------------------------------------------------

def list_members(session: Session, segment: Segment, *, after: int = 0, limit: int = 50,
                 user_id: int | None = None, now: datetime | None = None) -> list[Membership]:
    """Explicit, non-expired members ordered by user id; keyset pagination via ``after``."""
    now = now or utcnow()
    stmt = (select(Membership)
            .where(Membership.segment_id == segment.id, Membership.user_id > after,
                   or_(Membership.expires_at.is_(None), Membership.expires_at > now))
            .order_by(Membership.user_id).limit(limit))
    if user_id is not None:
        stmt = stmt.where(Membership.user_id == user_id)
    return list(session.scalars(stmt))


def expire_memberships(session: Session, now: datetime | None = None, batch_size: int | None = None,
                       commit_each_batch: bool = False) -> int:
    """Purge every membership expired at ``now`` in batches; returns how many were removed."""
    now = now or utcnow()
    batch_size = batch_size or current_app.config["EXPIRY_BATCH_SIZE"]
    total = 0
    while True:
        removed = membership_sql.expire_batch(session, now, batch_size)
        total += removed
        if commit_each_batch:
            session.commit()
        if removed < batch_size:
            return total
