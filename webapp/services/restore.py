"""Deleted segments: what a deletion left (when, by whom, what it kept) and restoring one.

A deletion (``segments.retire_segment`` + ``bulk.delete_segment``) takes the segment out of the
catalog at once and then moves its live explicit memberships into ``retired_memberships``
(with their ``added_at`` and expiry), each with its ``removed`` · ``segment_deleted`` history
row; its rollout exclusions stay in ``rollout_exclusions`` (reads ignore a segment outside the
catalog, and the history replay keeps a user's exclusion across the deletion). For
``RESTORE_DAYS`` after the deletion the segment can be restored, like Unleash's revive:

- the same segment row comes back (same id, salt, hash scheme, description), so its rollout
  covers the same users outside a group; in a group it takes free buckets of the group again
  (the group's hash, as any move into a group), and at 0% when the group has no room for its
  rollout at the deletion (or a pending scheduled change of the group would then not fit);
- one ``rollout_changes`` row with reason ``restored`` (history replays the segment as live
  again from then: rollout members come back with ``added`` · ``restored`` entries);
- its kept memberships come back with their expiry, each with an ``added`` · ``restored``
  history row; memberships whose expiry passed while the segment was deleted stay gone (history
  already has them leaving at the deletion: they would have expired since); up to
  ``bulk.SYNC_LIMIT`` in the request, more by a chunked ``restore_segment`` operation whose
  rows (and history rows) appear chunk by chunk, as a bulk add's do;
- its exclusions hold again (they never left);
- its scheduled changes cancelled by the deletion stay cancelled.

Refused (nothing changes): the slug taken by a live segment since (409 ``slug_taken_since``,
naming it), the window passed (409 ``restore_expired``), a deletion from before restores
existed or already purged (409 ``not_restorable``), the deletion's own removal still running
(409 ``deletion_in_progress``), some kept member now an explicit member of another segment of
its group (409 ``group_overlap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from webapp.errors import Conflict, NotFound, ValidationFailed, detail
from webapp.models import (
    BulkOperation,
    Membership,
    RetiredMembership,
    RolloutChange,
    RolloutExclusion,
    Segment,
    SegmentEvent,
)
from webapp.models.enums import OperationKind, Reason, SegmentEventKind
from webapp.services.common import DbSession, clock, iso, slug_problem, utcnow
from webapp.services.membership import bulk
from webapp.services.membership import store as membership_store
from webapp.services.rollout.allocation import NoRoom, RolloutState, change
from webapp.services.segments import events as activity_log
from webapp.services.segments import lifecycle as segments
from webapp.services.segments.rollout_state import (
    apply_due_locked,
    catalog_changed,
    check_future,
    ensure_group,
    lock_rule_set,
    lock_scope,
    require_version,
    set_state,
    start_reevaluation,
    states,
)

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Deleted:
    """A deleted segment as its page and the API show it."""

    segment: Segment
    deleted_at: datetime
    deleted_by: str
    rollout_percent: float  # at the deletion
    exclusion_group: str | None  # at the deletion
    kept_members: int  # memberships kept for a restore (some may expire before it)
    exclusions: int
    restorable_until: datetime
    restorable: bool  # kept (deleted since restores exist, not yet purged)
    taken_by: Segment | None  # a live segment with the slug now
    deleting: BulkOperation | None  # the deletion's removal, still running

    now: datetime  # when this was read (the database's clock, as deletions are stamped)

    @property
    def problem(self) -> str | None:
        """The code a restore would be refused with now, if any (``restore_segment``'s order)."""
        if self.now >= self.restorable_until:
            return "restore_expired"
        if self.taken_by is not None:
            return "slug_taken_since"
        if not self.restorable:
            return "not_restorable"
        if self.deleting is not None:
            return "deletion_in_progress"
        return None


@dataclass(frozen=True)
class Restored:
    segment: Segment
    members: int  # memberships back now, or to come back through ``operation``
    expired: int  # kept memberships whose expiry passed while the segment was deleted
    exclusions: int
    rollout_percent: float  # restored with
    wanted_percent: float  # had at the deletion
    exclusion_group: str | None
    operation: BulkOperation | None

    @property
    def at_zero(self) -> bool:
        """Restored at 0% because its group had no room for its rollout."""
        return self.wanted_percent > 0 and self.rollout_percent == 0


def _slug(slug: str) -> str:
    if (problem := slug_problem(slug)) is not None:
        raise ValidationFailed(problem.message, [detail("slug", problem.message, code=problem.code)])
    return slug


def _unknown(slug: str) -> NotFound:
    return NotFound(
        f"no deleted segment {slug}",
        [detail("slug", "no deleted segment has this slug", code="no_deleted_segment", slug=slug)],
    )


def find_deleted(session: DbSession, slug: str, segment_id: int | None = None) -> Segment:
    """The most recently deleted segment with this slug (or the one with ``segment_id``)."""
    stmt = select(Segment).where(Segment.slug == _slug(slug), Segment.deleted_at.is_not(None))
    if segment_id is not None:
        stmt = stmt.where(Segment.id == segment_id)
    segment = session.scalars(stmt.order_by(Segment.deleted_at.desc(), Segment.id.desc()).limit(1)).first()
    if segment is None:
        raise _unknown(slug)
    return segment


def settings_at_deletion(session: DbSession, segment: Segment) -> RolloutState:
    """The rollout (percentage, group) the segment had when it was deleted: its last rollout
    change before the deletion's own."""
    last = session.scalars(
        select(RolloutChange)
        .where(
            RolloutChange.segment_id == segment.id,
            RolloutChange.reason != Reason.SEGMENT_DELETED,
            RolloutChange.changed_at <= (segment.deleted_at or utcnow()),
        )
        .order_by(RolloutChange.changed_at.desc(), RolloutChange.id.desc())
        .limit(1)
    ).first()
    return RolloutState(last.to_bp, last.exclusion_group) if last is not None else RolloutState(0)


def describe(
    session: DbSession, segment: Segment, *, days: int = DEFAULT_DAYS, now: datetime | None = None
) -> Deleted:
    """What the deleted segment's page shows (``now``: a fixed clock, else the database's)."""
    assert segment.deleted_at is not None
    deletion = session.scalars(
        select(SegmentEvent)
        .where(SegmentEvent.segment_id == segment.id, SegmentEvent.kind == SegmentEventKind.DELETED)
        .order_by(SegmentEvent.id.desc())
        .limit(1)
    ).first()
    state = settings_at_deletion(session, segment)
    kept = session.scalar(
        select(func.count()).select_from(RetiredMembership).where(RetiredMembership.segment_id == segment.id)
    )
    exclusions = session.scalar(
        select(func.count()).select_from(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id)
    )
    taken_by = session.scalars(select(Segment).where(Segment.slug == segment.slug, Segment.is_live)).first()
    return Deleted(
        segment=segment,
        deleted_at=segment.deleted_at,
        deleted_by=deletion.actor if deletion is not None else "",
        rollout_percent=state.basis_points / 100,
        exclusion_group=state.group,
        kept_members=kept or 0,
        exclusions=exclusions or 0,
        restorable_until=segment.deleted_at + timedelta(days=days),
        restorable=segment.restorable,
        taken_by=taken_by,
        deleting=bulk.unfinished(session, segment.id, OperationKind.DELETE_SEGMENT),
        now=now or clock(session),
    )


def restore_segment(
    session: DbSession,
    slug: str,
    *,
    actor: str = "",
    days: int = DEFAULT_DAYS,
    segment_id: int | None = None,
    now: datetime | None = None,
    expected_version: int | None = None,
) -> Restored:
    """Restore the most recently deleted segment with this slug (module docstring); every
    refusal is checked before anything changes. ``now``: a fixed clock (tests)."""
    given = now
    found = find_deleted(session, slug, segment_id)
    segment = session.scalars(
        select(Segment)
        .where(Segment.id == found.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if segment.deleted_at is None:
        raise Conflict(
            f"segment {slug} was restored already",
            [detail("slug", "restored already", code="already_restored", slug=slug)],
        )
    deleted_at = segment.deleted_at
    # The database's clock, as the deletion was stamped with (or the caller's fixed one).
    refuse_unrestorable(session, segment, days, given or clock(session))
    require_version(session, expected_version)  # before anything changes (again after the locks)
    wanted = settings_at_deletion(session, segment)
    group = wanted.group
    try:
        with session.begin_nested():
            segment.deleted_at = None
            segment.restorable = False
            session.flush()
    except IntegrityError:  # a segment with the slug was created meanwhile
        session.refresh(segment)
        _refuse_taken(session, segment)
        raise
    if group is not None:
        ensure_group(session, group, given or utcnow())
    locked = lock_scope(session, segment.id, group)
    require_version(session, expected_version)  # after the locks: a preview's numbers still hold
    if segment.rules is not None or segment.rules_version or group is not None:
        lock_rule_set(session)  # (before the clock, as a rules change: membership.rules.rematch)
    now = given or clock(session)  # after the locks, as every rollout change
    apply_due_locked(session, locked, now)
    if group is not None:
        refuse_overlap(session, segment, group, locked, now)
    new = fitting(session, locked, states(locked), segment.id, wanted, now)
    set_state(session, segment, new, reason=Reason.RESTORED, actor=actor, at=now, force=True)
    if segment.rules is not None or segment.rules_version or group is not None:
        # its rule matches are as of its deletion (or, rules removed, may still be there: a
        # deletion stops the re-evaluation removing them): evaluated again
        start_reevaluation(session, segment, actor, now)
    expired = int(
        session.execute(
            text("DELETE FROM retired_memberships WHERE segment_id = :segment AND expires_at <= :now"),
            {"segment": segment.id, "now": now},
        ).rowcount  # type: ignore[attr-defined]
    )
    waiting = session.scalar(
        select(func.count()).select_from(RetiredMembership).where(RetiredMembership.segment_id == segment.id)
    )
    kept = membership_store.retired_ids(session, segment.id) if (waiting or 0) <= bulk.SYNC_LIMIT else []
    exclusions = session.scalar(
        select(func.count()).select_from(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id)
    )
    operation = None
    members = waiting or 0
    if members <= bulk.SYNC_LIMIT:
        if kept:
            membership_store.lock_segment_bulk(session, segment.id)
            _, members = membership_store.restore_members(
                session, segment.id, segment.slug, kept, now, actor, group=new.group, at=now
            )
    else:
        operation = bulk._start(
            session, OperationKind.RESTORE_SEGMENT, segment, now, Reason.RESTORED, actor, total=members
        )
    result = Restored(
        segment=segment,
        members=members,
        expired=expired,
        exclusions=exclusions or 0,
        rollout_percent=new.basis_points / 100,
        wanted_percent=wanted.basis_points / 100,
        exclusion_group=new.group,
        operation=operation,
    )
    activity_log.record(
        session,
        segment,
        SegmentEventKind.RESTORED,
        actor,
        now,
        members=members,
        expired=expired,
        exclusions=result.exclusions,
        rollout_percent=result.rollout_percent,
        wanted_percent=result.wanted_percent,
        exclusion_group=new.group,
        deleted_at=iso(deleted_at),
        background=operation is not None,
        operation=str(operation.id) if operation is not None else None,
    )
    catalog_changed(session)
    session.flush()
    return result


def refuse_unrestorable(session: DbSession, segment: Segment, days: int, now: datetime) -> None:
    """409 when the deleted segment cannot be restored at ``now``: the window passed, its slug
    taken since, its members not kept, its deletion still running (a restore's order)."""
    slug = segment.slug
    assert segment.deleted_at is not None
    deleted_at = segment.deleted_at
    until = deleted_at + timedelta(days=days)
    if now >= until:
        raise Conflict(
            f"segment {slug} was deleted at {iso(deleted_at)}: it could be restored until {iso(until)}",
            [
                detail(
                    "slug",
                    "the restore window has passed",
                    code="restore_expired",
                    slug=slug,
                    deleted_at=iso(deleted_at),
                    restorable_until=iso(until),
                    days=days,
                )
            ],
        )
    _refuse_taken(session, segment)
    if not segment.restorable:
        raise Conflict(
            f"segment {slug} was deleted before restores existed (or its members were purged): nothing to restore",
            [detail("slug", "its members were not kept", code="not_restorable", slug=slug)],
        )
    if (deleting := bulk.unfinished(session, segment.id, OperationKind.DELETE_SEGMENT)) is not None:
        raise Conflict(
            f"segment {slug}'s deletion is still removing its members ({deleting.done:,} of {deleting.total:,}): "
            "restore it once that has finished",
            [
                detail(
                    "slug",
                    "its deletion is still running",
                    code="deletion_in_progress",
                    slug=slug,
                    done=deleting.done,
                    total=deleting.total,
                )
            ],
        )


def _refuse_taken(session: DbSession, segment: Segment) -> None:
    taken = session.scalars(select(Segment).where(Segment.slug == segment.slug, Segment.is_live)).first()
    if taken is not None and taken.id != segment.id:
        raise Conflict(
            f"the slug {segment.slug} belongs to another segment since {iso(taken.created_at)}: "
            "delete or rename that one first",
            [
                detail(
                    "slug",
                    "taken by a newer segment",
                    code="slug_taken_since",
                    slug=segment.slug,
                    segment=taken.slug,
                    created_at=iso(taken.created_at),
                )
            ],
        )


def refuse_overlap(
    session: DbSession, segment: Segment, group: str, locked: dict[int, Segment], now: datetime
) -> None:
    """409 when a kept member is now an explicit member of another segment of the group (the
    same rule as a move into a group)."""
    others = [sid for sid, s in locked.items() if s.exclusion_group == group and sid != segment.id]
    if not others:
        return
    row = session.execute(
        select(Membership.segment_id, func.count())
        .join(
            RetiredMembership,
            (RetiredMembership.user_id == Membership.user_id) & (RetiredMembership.segment_id == segment.id),
        )
        .where(
            Membership.segment_id.in_(others),
            Membership.live_at(now),
            (RetiredMembership.expires_at.is_(None)) | (RetiredMembership.expires_at > now),
        )
        .group_by(Membership.segment_id)
        .order_by(func.count().desc())
        .limit(1)
    ).first()
    if row is not None:
        segments.refuse_overlap(
            f"members of {segment.slug} at its deletion are now", locked[row[0]].slug, group, row[1]
        )


def fitting(
    session: DbSession,
    scope: dict[int, Segment],
    current: dict[int, RolloutState],
    segment_id: int,
    wanted: RolloutState,
    now: datetime,
) -> RolloutState:
    """The rollout a restore gives the segment: the wanted one in its group, or 0% in it when
    the group has no room for it now (``current``: the scope's states in force) or for a
    pending scheduled change of the group after it. The restore and its preview
    (services.impact.of_restore) both ask this."""
    try:
        new = change(current, segment_id, wanted.basis_points, group=wanted.group)
        check_future(session, scope, now, current={**current, segment_id: new})
        return new
    except (NoRoom, ValidationFailed):
        return change(current, segment_id, 0, group=wanted.group)


def purge_expired_restores(session: DbSession, now: datetime, days: int, limit: int) -> int:
    """Drop up to ``limit`` kept rows of segments deleted more than ``days`` ago (the nightly
    job, one call per committed batch); a segment with nothing left is no longer restorable.
    Returns how many rows went (0: nothing left to purge)."""
    cutoff = now - timedelta(days=days)
    segment = session.scalars(
        select(Segment)
        .where(Segment.restorable, Segment.deleted_at.is_not(None), Segment.deleted_at < cutoff)
        .order_by(Segment.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if segment is None:
        return 0
    gone = membership_store.drop_retired(session, segment.id, limit)
    if gone < limit:
        segment.restorable = False
    return max(gone, 1)
