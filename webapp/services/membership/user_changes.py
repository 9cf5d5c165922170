"""Atomic per-user changes: add and remove a user's segments in one all-or-nothing call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from webapp.errors import Conflict, Detail, ValidationFailed, detail
from webapp.models import Segment
from webapp.models.enums import Reason
from webapp.rules import MAX_ITEMS_PER_CHANGE
from webapp.services.common import DbSession, clock, expiry, slug_problem, user_id_problem, utcnow
from webapp.services.membership import store as membership_store
from webapp.services.reads.path import UserView, user_view


@dataclass(frozen=True)
class AddSpec:
    """One entry of ``add``: a slug with an optional per-item TTL or absolute expiry."""

    slug: str
    ttl_seconds: int | None = None
    expires_at: datetime | None = None


@dataclass
class ChangeResult:
    user_id: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_members: list[str] = field(default_factory=list)


def change_user_segments(
    session: DbSession,
    user_id: int,
    add: Sequence[AddSpec] = (),
    delete: Sequence[str] = (),
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: Reason = Reason.API,
    actor: str = "",
    now: datetime | None = None,
) -> ChangeResult:
    """Add and remove a user's segments atomically; all or nothing.

    Any invalid item (bad or unknown slug, a slug in both lists or twice, a past expiry)
    rejects the whole request with every offending item in ``details``; nothing is written
    before everything is validated. Re-adding a segment updates its expiry; adding one the user
    is in through its rollout makes the membership explicit (``updated``: the answer does not
    change, so no visible history row); removing one the user is not in is reported, not an
    error. Removing a user who is in through a rollout records an exclusion that overrides it.

    Every history row of the change is stamped with one instant, the database clock read after
    the locks that order it against conflicting changes (unless ``now`` is given): history
    order is the order readers saw the changes in. Expiries are taken at that instant too
    (``ttl_seconds`` counts from it).
    """
    given, now = now, now or utcnow()
    if len(add) + len(delete) > MAX_ITEMS_PER_CHANGE:
        raise ValidationFailed(
            f"at most {MAX_ITEMS_PER_CHANGE} items in add and del together",
            [
                detail(
                    "add",
                    f"{len(add) + len(delete)} items given",
                    code="too_many_items",
                    max=MAX_ITEMS_PER_CHANGE,
                    given=len(add) + len(delete),
                )
            ],
        )
    expiries, deleting = _validate(user_id, add, delete, ttl_seconds, expires_at, now)

    membership_store.lock_user(session, user_id)
    segments = _lock_live_segments(session, [*expiries, *deleting])
    unknown = [s for s in [*expiries, *deleting] if s not in segments]
    if unknown:
        raise ValidationFailed(
            "the request was not applied: unknown segments",
            [
                detail("add" if s in expiries else "del", "no such segment", code="unknown_segment", slug=s)
                for s in unknown
            ],
        )

    result = ChangeResult(user_id)
    membership_store.lock_segments_for_user(session, [s.id for s in segments.values()], user_id)
    at = now = given or clock(session)
    # Expiries are taken at this instant, after the locks: a TTL counts from when the change
    # happens, and an expires_at that passed while the change waited refuses it (nothing is
    # written yet). From the request's start, a wait longer than the TTL wrote a membership
    # expired at its own stamp: out for reads, in for history (membership_store.ALIVE_AT_STAMP).
    expiries, _ = _validate(user_id, add, delete, ttl_seconds, expires_at, now)
    # A stale row (expired, not yet purged) ends at its expiry first, so a re-add is a new add.
    membership_store.expire_batch(session, now, MAX_ITEMS_PER_CHANGE, user_id=user_id)
    view = user_view(session, user_id, now)
    _refuse_group_overlap(
        view, [segments[slug] for slug in expiries], [segments[slug].id for slug in deleting]
    )
    was_in = {segments[a.slug].id for a in view.active if a.slug in segments}
    if expiries:
        counts = membership_store.upsert(
            session,
            user_id,
            {segments[slug].id: until for slug, until in expiries.items()},
            now,
            reason,
            actor,
            at=at,
            already_in=was_in,
        )
        for slug in expiries:
            sid = segments[slug].id
            if sid in counts.added and sid not in was_in:
                result.added.append(slug)
            elif sid in counts.added or sid in counts.updated:
                result.updated.append(slug)
            else:
                result.unchanged.append(slug)
    if deleting:
        ids = [segments[slug].id for slug in deleting]
        in_rollout = [sid for sid in ids if sid in view.rollout_ids]
        membership_store.remove(session, user_id, ids, in_rollout, now, reason, actor, at=at, was_in=was_in)
        for slug in deleting:
            (result.removed if segments[slug].id in was_in else result.not_members).append(slug)
    return result


def _refuse_group_overlap(view: UserView, adding: Sequence[Segment], removing: Sequence[int]) -> None:
    """409 when an added segment's exclusion group already holds the user through another
    segment (one the request does not also remove), or two added segments share a group."""
    by_slug = {s.slug: sid for sid, s in view.catalog.segments.items()}
    holding = {
        view.catalog.group_of[sid]: slug
        for slug, sid in ((a.slug, by_slug.get(a.slug)) for a in view.active)
        if sid in view.catalog.group_of and sid not in removing
    }
    problems, claimed = [], dict[str, str]()
    for segment in adding:
        group = segment.exclusion_group
        if group is None:
            continue
        other = holding.get(group) if holding.get(group) != segment.slug else None
        other = other or claimed.get(group)
        if other is not None:
            problems.append(
                detail(
                    "add",
                    f"the user is already in {other}, which shares exclusion group {group}",
                    code="group_occupied",
                    slug=segment.slug,
                    segment=other,
                    exclusion_group=group,
                )
            )
        claimed[group] = segment.slug
    if problems:
        raise Conflict(f"{problems[0]['message']}: a user is in at most one segment of a group", problems)


def _validate(
    user_id: int,
    add: Sequence[AddSpec],
    delete: Sequence[str],
    ttl_seconds: int | None,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[dict[str, datetime | None], list[str]]:
    """Every problem of the request at once, or (slug -> expiry to add, slugs to remove)."""
    problems: list[Detail] = []
    if (problem := user_id_problem(user_id)) is not None:
        problems.append(detail("user_id", problem.message, code=problem.code))
    default_expiry, found = expiry(ttl_seconds, expires_at, now)
    problems += found
    if not add and not delete:
        problems.append(detail("add", "give at least one slug in add or del", code="nothing_to_change"))
    expiries: dict[str, datetime | None] = {}
    for i, spec in enumerate(add):
        where = f"add[{i}]"
        if (problem := slug_problem(spec.slug)) is not None:
            problems.append(detail(where, problem.message, code=problem.code, slug=str(spec.slug)[:80]))
            continue
        if spec.slug in expiries:
            problems.append(detail(where, "slug listed twice in add", code="slug_twice", slug=spec.slug))
            continue
        own, found = expiry(spec.ttl_seconds, spec.expires_at, now, where)
        problems += found
        has_own = spec.ttl_seconds is not None or spec.expires_at is not None
        expiries[spec.slug] = own if has_own else default_expiry
    deleting: list[str] = []
    for i, slug in enumerate(delete):
        where = f"del[{i}]"
        if (problem := slug_problem(slug)) is not None:
            problems.append(detail(where, problem.message, code=problem.code, slug=str(slug)[:80]))
        elif slug in deleting:
            problems.append(detail(where, "slug listed twice in del", code="slug_twice", slug=slug))
        elif slug in expiries:
            problems.append(detail(where, "slug is in both add and del", code="in_both_lists", slug=slug))
        else:
            deleting.append(slug)
    if problems:
        raise ValidationFailed("the request was not applied: fix the listed items", problems)
    return expiries, deleting


def _lock_live_segments(session: DbSession, slugs: Iterable[str]) -> dict[str, Segment]:
    """Live segments by slug, share-locked in id order so none is deleted while we write."""
    slugs = list(slugs)
    if not slugs:
        return {}
    stmt = (
        select(Segment)
        .where(Segment.slug.in_(slugs), Segment.is_live)
        .order_by(Segment.id)
        .with_for_update(read=True)
    )
    return {s.slug: s for s in session.scalars(stmt)}
