"""Bulk membership operations on one segment: many users at once, without stalling anyone.

**Add** (``POST .../members``), **remove** (``DELETE .../members``: those users leave) and
**replace** (``PUT .../members``: afterwards the explicit members are exactly the listed ids).
Each takes up to MAX_BULK_IDS ids, validated whole before anything is written.

Up to SYNC_LIMIT ids are done in the request's own transaction (a replace also needs at most
SYNC_LIMIT members to leave). More become a ``BulkOperation``: the ids are COPYed into
``bulk_operation_ids`` and a job works through them in chunks of CHUNK, each chunk its own
short transaction holding the segment share-locked, the segment's bulk lock for the id ranges
of its users and its rows locked in user order (the global lock order, membership_store), so a
per-user writer of one of those users waits at most one chunk, writers of other users of the
segment do not wait for it, and readers never wait. The job records its cursor (the last user
id done) with each chunk, so it is resumable after a crash, and each chunk is idempotent
(re-adding a member or removing a non-member changes nothing). A replace runs in two passes:
pass 0 adds the listed
ids chunk by chunk (or sets their new expiry); pass 1 walks the segment's members in windows
of CHUNK user ids (keyset on user id, its own cursor) and removes those not listed (an
anti-join against ``bulk_operation_ids``) that were members before the operation started:
members that other clients add while it runs are theirs to keep.

**Removal means leaving, as for one user.** Bulk remove and replace remove a user exactly as
the per-user removal (user_changes) does: the explicit membership goes and, when the segment's
rollout covers the user now, a rollout exclusion is recorded, so the user is out whatever the
percentage (until explicitly added again) and every ``removed`` history row means the user
really left (history replays an api/dashboard removal of a covered user as an exclusion). So
``DELETE .../members`` also takes out listed users who are in only through the rollout, like a
per-user ``del``; a replace leaves users who are in only through the rollout alone (it
governs explicit members), but the explicit members it removes leave even if their bucket is
in the rollout. Each operation is also one segment activity entry (members_added /
members_removed / members_replaced) with its counts: at request time, or when a background
operation finishes.

Deleting a segment is instant for everyone (it leaves the catalog at once); its members' rows
are removed the same way, in chunks, by a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from flask import current_app, has_app_context
from sqlalchemy import select, text

from webapp.errors import Conflict, Detail, NotFound, ValidationFailed, detail
from webapp.models import BulkOperation, Segment
from webapp.models.enums import OperationKind, Reason, ReportStatus, SegmentEventKind
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.platform.queue import enqueue_after_commit
from webapp.rules import MAX_BULK_IDS
from webapp.services.common import DbSession, clock, expiry, user_id_details, utcnow
from webapp.services.membership import rules as rule_matches
from webapp.services.membership import store as membership_store
from webapp.services.reads import path as read_path
from webapp.services.segments import events as activity_log
from webapp.services.segments import lifecycle as segments
from webapp.services.segments.lifecycle import get_live_segment
from webapp.services.segments.rollout_state import require_version

SYNC_LIMIT = 10_000  # ids (and, for a replace, members leaving) done within the request
CHUNK = 2_000  # ids (or rows) per transaction of an operation, unless BULK_CHUNK says otherwise


def chunk_size() -> int:
    """Ids (or rows) per chunk: the BULK_CHUNK setting, else CHUNK (docs/configuration.md)."""
    configured = current_app.config.get("BULK_CHUNK") if has_app_context() else None
    return int(configured or CHUNK)


RUN_JOB = "webapp.jobs.tasks.run_bulk_operation"
ADD_PASS, REMOVE_PASS = 0, 1  # BulkOperation.phase of a replace


@dataclass
class BulkResult:
    segment: str
    received: int
    added: int
    updated: int
    unchanged: int
    skipped: int = 0  # skip_conflicts: listed ids already in another segment of the group, left out


@dataclass(frozen=True)
class GroupConflicts:
    """The listed users already in another segment of the exclusion group: user id -> that
    segment's slug (explicitly or through its rollout), as the add would have met them."""

    group: str
    segment_of: dict[int, str]

    def __len__(self) -> int:
        return len(self.segment_of)

    def by_segment(self) -> dict[str, int]:
        """How many conflict with each other segment, most first."""
        counts: dict[str, int] = {}
        for slug in self.segment_of.values():
            counts[slug] = counts.get(slug, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def sample(self, size: int = 10) -> list[int]:
        return sorted(self.segment_of)[:size]


class GroupConflict(Conflict):
    """409 ``group_occupied`` for a bulk write: the details name the first 100 users, the
    exception carries them all (``conflicts``) for the dashboard's count, sample and download."""

    def __init__(self, message: str, details: list[Detail], conflicts: GroupConflicts) -> None:
        super().__init__(message, details)
        self.conflicts = conflicts


@dataclass
class RemoveResult:
    segment: str
    received: int
    removed: int
    not_members: int  # distinct listed ids that were not in the segment


@dataclass
class ReplaceResult:
    segment: str
    received: int
    added: int
    updated: int
    removed: int
    unchanged: int


def validated(
    user_ids: Sequence[int], ttl_seconds: int | None, expires_at: datetime | None, now: datetime, nothing: str
) -> tuple[list[int], datetime | None]:
    """The distinct ids in ascending order and the expiry asked for; every problem at once
    (ValidationFailed, ``nothing`` saying that nothing happened) before anything is written."""
    if not user_ids:
        raise ValidationFailed(
            "user_ids must not be empty", [detail("user_ids", "empty list", code="user_ids_empty")]
        )
    if len(user_ids) > MAX_BULK_IDS:
        raise ValidationFailed(
            f"at most {MAX_BULK_IDS:,} user ids per request",
            [
                detail(
                    "user_ids",
                    f"{len(user_ids):,} given",
                    code="too_many_ids",
                    max=MAX_BULK_IDS,
                    given=len(user_ids),
                )
            ],
        )
    bad = user_id_details(user_ids)
    until, found = expiry(ttl_seconds, expires_at, now)
    if bad or found:
        raise ValidationFailed(f"{nothing}: fix the listed items", bad + found)
    return sorted(set(user_ids)), until


def bulk_add(
    session: DbSession,
    slug: str,
    user_ids: Sequence[int],
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: Reason = Reason.API,
    actor: str = "",
    now: datetime | None = None,
    skip_conflicts: bool = False,
    expected_version: int | None = None,
) -> BulkResult | BulkOperation:
    """Add up to MAX_BULK_IDS users to one segment: done now (a BulkResult) for up to
    SYNC_LIMIT ids, else queued as a resumable BulkOperation. Validated whole first: one bad
    id and nothing happens. In an exclusion group, listed users already in another segment of
    the group refuse the whole add (GroupConflict, 409), unless ``skip_conflicts``: then they
    are left out, counted as ``skipped`` in the result (or the operation) and the activity
    entry, and the others are added. Conflicts are decided once, at the request, for the whole
    list (one statement per other segment of the group, whatever the list's length).
    ``expected_version``: as the other writers (409 impact_changed)."""
    at, now = now, now or utcnow()
    ids, until = validated(user_ids, ttl_seconds, expires_at, now, "no user was added")
    segment = get_live_segment(session, slug, lock="share")
    require_version(session, expected_version)
    skipped: dict[str, int] = {}
    if skip_conflicts:
        conflicts = group_conflicts(session, segment, ids, now)
        if conflicts:
            ids, skipped = _without(ids, conflicts), conflicts.by_segment()
    else:
        refuse_group_conflicts(session, segment, ids, now, "no user was added")
    skipped_facts = (
        {"skipped": sum(skipped.values()), "skipped_in": skipped, "exclusion_group": segment.exclusion_group}
        if skipped
        else {}
    )
    if len(ids) > SYNC_LIMIT:
        operation = _start(
            session, OperationKind.BULK_ADD, segment, now, reason, actor, ids=ids, expires_at=until
        )
        operation.skipped = sum(skipped.values())
        return operation
    added, updated = (
        _add(session, ids, segment, until, reason, actor, at=at, ttl_seconds=ttl_seconds) if ids else (0, 0)
    )
    result = BulkResult(
        segment.slug, len(user_ids), added, updated, len(ids) - added - updated, sum(skipped.values())
    )
    activity_log.record(
        session,
        segment,
        SegmentEventKind.MEMBERS_ADDED,
        actor,
        at,
        count=added,
        received=result.received,
        updated=updated,
        unchanged=result.unchanged,
        reason=reason,
        **skipped_facts,
    )
    return result


def _without(ids: list[int], conflicts: GroupConflicts) -> list[int]:
    """``ids`` (ascending, distinct) less the conflicting users, in one vectorised pass."""
    listed = np.asarray(ids, dtype=np.int64)
    out = np.fromiter(conflicts.segment_of, dtype=np.int64, count=len(conflicts))
    kept: list[int] = listed[~np.isin(listed, out, assume_unique=True)].tolist()
    return kept


def bulk_remove(
    session: DbSession,
    slug: str,
    user_ids: Sequence[int],
    *,
    reason: Reason = Reason.API,
    actor: str = "",
    now: datetime | None = None,
    expected_version: int | None = None,
) -> RemoveResult | BulkOperation:
    """Take up to MAX_BULK_IDS users out of one segment (each as a per-user removal would:
    see the module docstring): done now for up to SYNC_LIMIT ids, else a resumable
    BulkOperation. Validated whole first."""
    at, now = now, now or utcnow()
    ids, _ = validated(user_ids, None, None, now, "no user was removed")
    segment = get_live_segment(session, slug, lock="share")
    require_version(session, expected_version)
    if len(ids) > SYNC_LIMIT:
        return _start(session, OperationKind.BULK_REMOVE, segment, now, reason, actor, ids=ids)
    removed = _remove(session, ids, segment, reason, actor, at=at)
    result = RemoveResult(segment.slug, len(user_ids), removed, len(ids) - removed)
    activity_log.record(
        session,
        segment,
        SegmentEventKind.MEMBERS_REMOVED,
        actor,
        at,
        count=removed,
        received=result.received,
        reason=reason,
    )
    return result


def bulk_replace(
    session: DbSession,
    slug: str,
    user_ids: Sequence[int],
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: Reason = Reason.API,
    actor: str = "",
    now: datetime | None = None,
    expected_version: int | None = None,
) -> ReplaceResult | BulkOperation:
    """Make the segment's explicit members exactly ``user_ids`` (up to MAX_BULK_IDS): new ones
    added, listed members given the new expiry (none: no expiry), the others removed. Done now
    when at most SYNC_LIMIT ids are given and at most SYNC_LIMIT members leave, else a
    resumable BulkOperation (add pass, then removal pass). Validated whole first."""
    at, now = now, now or utcnow()
    ids, until = validated(user_ids, ttl_seconds, expires_at, now, "nothing was replaced")
    segment = get_live_segment(session, slug, lock="share")
    require_version(session, expected_version)
    refuse_group_conflicts(session, segment, ids, now, "nothing was replaced")
    if len(ids) > SYNC_LIMIT or _unlisted_members(session, segment.id, ids, SYNC_LIMIT + 1) > SYNC_LIMIT:
        members = (
            session.scalar(
                text("SELECT count(*) FROM memberships WHERE segment_id = :segment"), {"segment": segment.id}
            )
            or 0
        )
        return _start(
            session,
            OperationKind.BULK_REPLACE,
            segment,
            now,
            reason,
            actor,
            ids=ids,
            expires_at=until,
            total=len(ids) + members,
        )
    # every member may leave: the whole segment's bulk lock, first (its adds then hold it already)
    membership_store.lock_segment_bulk(session, segment.id)
    added, updated = _add(session, ids, segment, until, reason, actor, at=at, ttl_seconds=ttl_seconds)
    leaving = membership_store.lock_unlisted_members(session, segment.id, listed=ids)
    removed = _remove(session, leaving, segment, reason, actor, at=at) if leaving else 0
    result = ReplaceResult(segment.slug, len(user_ids), added, updated, removed, len(ids) - added - updated)
    activity_log.record(
        session,
        segment,
        SegmentEventKind.MEMBERS_REPLACED,
        actor,
        at,
        count=len(ids),
        received=result.received,
        added=added,
        updated=updated,
        removed=removed,
        unchanged=result.unchanged,
        reason=reason,
    )
    return result


def _unlisted_members(session: DbSession, segment_id: int, ids: Sequence[int], limit: int) -> int:
    """How many of the segment's member rows are not in ``ids``, counting up to ``limit``."""
    return (
        session.scalar(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM memberships m WHERE m.segment_id = :segment AND NOT EXISTS "
                "(SELECT 1 FROM unnest(CAST(:ids AS bigint[])) AS l(user_id) WHERE l.user_id = m.user_id) LIMIT :limit) t"
            ),
            {"segment": segment_id, "ids": list(ids), "limit": limit},
        )
        or 0
    )


def _add(
    session: DbSession,
    ids: Sequence[int],
    segment: Segment,
    until: datetime | None,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
    ttl_seconds: int | None = None,
) -> tuple[int, int]:
    """One chunk of an add, decided and stamped at one instant read after its locks (``at``: a
    fixed clock): users already in through the rollout get their explicit row, not a visible
    history row (their answer does not change: membership_rule). ``ttl_seconds`` (an add in the
    request) counts from that instant, as a per-user change's does; a background chunk keeps its
    operation's expiry, and adds nothing once it has passed (membership_store.ALIVE_AT_STAMP)."""
    now = _moment(session, segment, at, membership_store.user_span(ids))
    if ttl_seconds is not None:
        until = now + timedelta(seconds=ttl_seconds)
    already_in = _in_through_rollout(session, segment, ids, now) if segment.rollout_basis_points else []
    return membership_store.upsert_many(
        session, ids, segment.id, segment.slug, until, now, reason, actor, at=now, already_in=already_in
    )


def _remove(
    session: DbSession,
    ids: Sequence[int],
    segment: Segment,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
) -> int:
    """One chunk of a removal, each user as a per-user removal would be (module docstring),
    decided and stamped at one instant read after its locks."""
    now = _moment(session, segment, at, membership_store.user_span(ids))
    return membership_store.remove_many(
        session,
        ids,
        segment.id,
        segment.slug,
        rollout_covered(session, segment, ids, now),
        now,
        reason,
        actor,
        at=now,
        group=segment.exclusion_group,
    )


def _moment(
    session: DbSession, segment: Segment, at: datetime | None, users: tuple[int, int] | None
) -> datetime:
    """The instant a chunk of the users ``users`` (lo, hi; None: any) happens at: after the
    segment's bulk lock for them (the chunk and per-user changes of those users are ordered by
    it; membership_store.lock_segment_bulk), so what the chunk decides from the rollout in force
    and the history it stamps are the same moment, the one readers see it at."""
    membership_store.lock_segment_bulk(session, segment.id, users)
    return at or clock(session)


def rollout_covered(
    session: DbSession, segment: Segment, user_ids: Sequence[int], now: datetime
) -> list[int]:
    """The users among ``user_ids`` the segment's rollout covers at ``now``, whatever their
    explicit rows: the per-user removal's test (``read_path.user_view(...).rollout_ids``: the
    catalog's rollouts at ``now``, scheduled changes due by then applied, a group's bucket
    ranges), evaluated for this one segment over many users at once."""
    if not user_ids:
        return []
    catalog = read_path.user_view(session, user_ids[0], now).catalog
    if segment.id in catalog.rule_ids:  # a segment in rule mode covers the users of its rule matches
        return rule_matches.covered_users(session, segment.id, user_ids)
    rollouts = catalog.rollouts(now)
    covered = rollouts.covers(segment.id, user_ids)
    return [u for u, inside in zip(user_ids, covered.tolist(), strict=True) if inside]


def members_among(
    session: DbSession, segment: Segment, user_ids: Sequence[int], now: datetime | None = None
) -> int:
    """How many of ``user_ids`` are already live explicit members of ``segment`` (an add
    leaves them in, at most updating their expiry): what "add the others" would not add."""
    if not user_ids:
        return 0
    found = session.scalar(
        text(
            "SELECT count(*) FROM memberships WHERE segment_id = :segment "
            "AND user_id = ANY(CAST(:ids AS bigint[])) AND (expires_at IS NULL OR expires_at > :now)"
        ),
        {"segment": segment.id, "ids": sorted(set(user_ids)), "now": now or utcnow()},
    )
    return int(found or 0)


def conflicts_for(
    session: DbSession, slug: str, user_ids: Sequence[int], now: datetime | None = None
) -> GroupConflicts:
    """The listed users a bulk add to ``slug`` would meet in another segment of its exclusion
    group now (none outside a group): the dashboard's download of the conflicting ids."""
    now = now or utcnow()
    ids, _ = validated(user_ids, None, None, now, "nothing can be checked")
    return group_conflicts(session, get_live_segment(session, slug), ids, now)


def group_conflicts(
    session: DbSession, segment: Segment, ids: Sequence[int], now: datetime
) -> GroupConflicts:
    """The listed users already in another live segment of the segment's exclusion group, explicitly
    or through its rollout (the per-user rule, for the whole list: one statement for the explicit
    rows, one rollout evaluation per other segment)."""
    if segment.exclusion_group is None or not ids:
        return GroupConflicts(segment.exclusion_group or "", {})
    others = session.scalars(
        select(Segment).where(
            Segment.exclusion_group == segment.exclusion_group, Segment.is_live, Segment.id != segment.id
        )
    ).all()
    conflicts: dict[int, str] = {}
    if others:
        rows = session.execute(
            text(
                "SELECT m.user_id, s.slug FROM memberships m JOIN segments s ON s.id = m.segment_id "
                "WHERE m.segment_id = ANY(CAST(:others AS int[])) AND m.user_id = ANY(CAST(:ids AS bigint[])) "
                "AND (m.expires_at IS NULL OR m.expires_at > :now)"
            ),
            {"others": [o.id for o in others], "ids": list(ids), "now": now},
        )
        conflicts.update({user: slug for user, slug in rows})
    for other in others:
        if other.rollout_basis_points:
            conflicts.update(
                {
                    user: other.slug
                    for user in _in_through_rollout(session, other, ids, now)
                    if user not in conflicts
                }
            )
    return GroupConflicts(segment.exclusion_group, conflicts)


def refuse_group_conflicts(
    session: DbSession, segment: Segment, ids: Sequence[int], now: datetime, nothing: str
) -> None:
    """409 when the segment is in an exclusion group and some listed users are already in
    another of its segments (explicitly, or through its rollout): the per-user rule, checked
    for the whole list before anything is written."""
    found = group_conflicts(session, segment, ids, now)
    if found:
        conflicts, group, first = found.segment_of, found.group, min(found.segment_of)
        raise GroupConflict(
            f"{nothing}: {len(conflicts):,} of the listed users are already in another segment of exclusion "
            f"group {group} (user {first} is in {conflicts[first]})",
            [
                detail(
                    "user_ids",
                    f"already in {slug}, which shares exclusion group {group}",
                    code="group_occupied",
                    user_id=user,
                    segment=slug,
                    exclusion_group=group,
                )
                for user, slug in sorted(conflicts.items())[:100]
            ],
            found,
        )


def _in_through_rollout(
    session: DbSession, segment: Segment, user_ids: Sequence[int], now: datetime
) -> list[int]:
    """The users the segment's rollout covers now who are in through it: not excluded from it
    and, in an exclusion group, not explicit members of another segment of the group (an
    explicit membership wins there, as the read path has it)."""
    covered = rollout_covered(session, segment, user_ids, now)
    if not covered:
        return []
    params = {"segment": segment.id, "ids": covered, "group": segment.exclusion_group, "now": now}
    out = set(
        session.scalars(
            text(
                "SELECT user_id FROM rollout_exclusions WHERE segment_id = :segment "
                "AND user_id = ANY(CAST(:ids AS bigint[]))"
            ),
            params,
        )
    )
    if segment.exclusion_group is not None:
        out |= set(
            session.scalars(
                text(
                    "SELECT DISTINCT m.user_id FROM memberships m JOIN segments s ON s.id = m.segment_id "
                    f"WHERE s.exclusion_group = :group AND s.{LIVE_SEGMENT_SQL} AND s.id <> :segment "
                    "AND m.user_id = ANY(CAST(:ids AS bigint[])) AND (m.expires_at IS NULL OR m.expires_at > :now)"
                ),
                params,
            )
        )
    return [u for u in covered if u not in out]


def delete_segment(
    session: DbSession,
    slug: str,
    actor: str = "",
    now: datetime | None = None,
    expected_version: int | None = None,
) -> tuple[int, BulkOperation | None]:
    """Delete a segment: gone for every read at commit, slug free again. Its members' rows
    go now if they are few, else in a queued operation; their history rows are stamped at
    the deletion either way. Returns (live members that left, the operation or None)."""
    refuse_while_restoring(session, slug)
    segment, members = segments.retire_segment(session, slug, now, actor, expected_version)
    assert segment.deleted_at is not None
    now = segment.deleted_at  # stamped after its lock
    if members <= SYNC_LIMIT:
        membership_store.remove_for_deleted_segment(session, segment.id, segment.slug, now, actor)
        return members, None
    return members, _start(
        session, OperationKind.DELETE_SEGMENT, segment, now, Reason.SEGMENT_DELETED, actor, total=members
    )


def unfinished(session: DbSession, segment_id: int, kind: OperationKind) -> BulkOperation | None:
    """The segment's queued or running operation of ``kind``, if any."""
    return session.scalars(
        select(BulkOperation)
        .where(
            BulkOperation.segment_id == segment_id,
            BulkOperation.kind == kind,
            BulkOperation.status.in_((ReportStatus.QUEUED, ReportStatus.RUNNING)),
        )
        .limit(1)
    ).first()


def refuse_while_restoring(session: DbSession, slug: str) -> None:
    """409 while the live segment's members are still coming back from a restore (a deletion
    then would keep only those already back)."""
    segment = get_live_segment(session, slug)
    if (operation := unfinished(session, segment.id, OperationKind.RESTORE_SEGMENT)) is not None:
        raise Conflict(
            f"segment {slug} is still being restored ({operation.done:,} of {operation.total:,} members back): "
            "delete it once that has finished",
            [
                detail(
                    "slug",
                    "still being restored",
                    code="restore_in_progress",
                    slug=slug,
                    operation=str(operation.id),
                    done=operation.done,
                    total=operation.total,
                )
            ],
        )


def _start(
    session: DbSession,
    kind: OperationKind,
    segment: Segment,
    now: datetime,
    reason: Reason,
    actor: str,
    *,
    ids: Sequence[int] = (),
    expires_at: datetime | None = None,
    total: int = 0,
) -> BulkOperation:
    operation = BulkOperation(
        id=uuid.uuid4(),
        kind=kind,
        segment_id=segment.id,
        slug=segment.slug,
        status=ReportStatus.QUEUED,
        total=total or len(ids),
        done=0,
        added=0,
        updated=0,
        removed=0,
        cursor=0,
        phase=ADD_PASS,
        expires_at=expires_at,
        reason=reason,
        actor=actor,
        attempts=0,
        created_at=now,
    )
    session.add(operation)
    session.flush()
    if ids:
        _copy_ids(session, operation.id, ids)
    enqueue_operation(operation)
    return operation


def enqueue_operation(operation: BulkOperation) -> None:
    enqueue_after_commit(RUN_JOB, str(operation.id), job_id=operation_job_id(operation.id))


def operation_job_id(operation_id: object) -> str:
    return f"bulk-{operation_id}"


def _copy_ids(session: DbSession, operation_id: uuid.UUID, ids: Sequence[int]) -> None:
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY bulk_operation_ids (operation_id, user_id) FROM STDIN") as copy:
        prefix = f"{operation_id}\t"
        for start in range(0, len(ids), 100_000):
            copy.write("".join(f"{prefix}{u}\n" for u in ids[start : start + 100_000]))


def get_operation(session: DbSession, operation_id: str) -> BulkOperation:
    try:
        key = uuid.UUID(str(operation_id))
    except ValueError:
        key = None
    operation = session.get(BulkOperation, key) if key else None
    if operation is None:
        raise NotFound(
            "no such operation",
            [detail("id", "no such operation", code="unknown_operation", value=str(operation_id)[:40])],
        )
    return operation


STAGED_KINDS = (OperationKind.BULK_ADD, OperationKind.BULK_REMOVE, OperationKind.BULK_REPLACE)
# The kinds whose chunks are BULK_CHUNK in size (run_chunk, chunk_size), and which the job paces
# (webapp/jobs/tasks.py, Pacing). A trait import and a re-evaluation have chunks of their own and
# run unpaced: others' reads stay within 2x of idle during a 1M-user re-evaluation without a
# pause (docs/performance.md, "rules (issue 29 ...)").
PACED_KINDS = frozenset({*STAGED_KINDS, OperationKind.DELETE_SEGMENT, OperationKind.RESTORE_SEGMENT})


def analyse_staged(session: DbSession, operation: BulkOperation) -> None:
    """``ANALYZE bulk_operation_ids`` when the operation (re)starts: its ids were just COPYed in,
    and a chunk reads the next ones by ``operation_id = … AND user_id > cursor ORDER BY user_id
    LIMIT chunk``. Without statistics of them (a table never analysed, or analysed before they
    came) the planner estimates a few rows and reads every remaining id of the operation by a
    bitmap scan and a top-N sort: measured 95 ms a chunk for 1M ids (the whole add's time again,
    docs/performance.md); with them, an index-only scan of the primary key, about 1 ms. A sample
    of 30,000 rows, 0.1-0.3 s; its lock only waits for another ANALYZE of the table (the caller
    commits at once)."""
    if operation.kind in STAGED_KINDS:
        session.execute(text("ANALYZE bulk_operation_ids"))


def run_chunk(session: DbSession, operation: BulkOperation) -> bool:
    """Do the operation's next chunk in the caller's transaction; False when nothing is left.
    The cursor, counts and status change with the chunk, so a crash loses nothing."""
    assert operation.segment_id is not None, "a trait import is run by services.traits.imports"
    if operation.kind == OperationKind.REEVALUATE_RULES:
        return rule_matches.reevaluate_chunk(session, operation)
    size = chunk_size()
    if operation.kind == OperationKind.DELETE_SEGMENT:  # keyset windows (membership_store.segment_window)
        seen, last = membership_store.segment_window(
            session, "memberships", operation.segment_id, operation.cursor, size
        )
        if seen:
            operation.done += membership_store.remove_for_deleted_segment(
                session,
                operation.segment_id,
                operation.slug,
                operation.created_at,
                operation.actor,
                after=operation.cursor,
                upto=last,
            )
            operation.cursor = last
        return seen == size
    segment = session.scalar(
        select(Segment).where(Segment.id == operation.segment_id, Segment.is_live).with_for_update(read=True)
    )
    if segment is None:
        raise NotFound(f"segment {operation.slug} was deleted while its {operation.kind} ran")
    if operation.kind == OperationKind.RESTORE_SEGMENT:
        return _restore_chunk(session, operation, segment, size)
    reason = Reason(operation.reason)
    if operation.kind == OperationKind.BULK_REPLACE and operation.phase == REMOVE_PASS:
        return _remove_unlisted(session, operation, segment, size)
    ids = list(
        session.scalars(
            text(
                "SELECT user_id FROM bulk_operation_ids WHERE operation_id = :op AND user_id > :cursor "
                "ORDER BY user_id LIMIT :chunk"
            ),
            {"op": operation.id, "cursor": operation.cursor, "chunk": size},
        )
    )
    if ids and operation.kind == OperationKind.BULK_REMOVE:
        operation.removed += _remove(session, ids, segment, reason, operation.actor)
    elif ids:  # a bulk add, or a replace's add pass
        added, updated = _add(session, ids, segment, operation.expires_at, reason, operation.actor)
        operation.added += added
        operation.updated += updated
    if ids:
        operation.done += len(ids)
        operation.cursor = ids[-1]
    if len(ids) == size:
        return True
    if operation.kind == OperationKind.BULK_REPLACE:  # the add pass is done: on to the removal pass
        operation.phase, operation.cursor = REMOVE_PASS, 0
        return True
    return False


def _restore_chunk(session: DbSession, operation: BulkOperation, segment: Segment, size: int) -> bool:
    """One chunk of a restore's members (services.restore), decided and stamped at one instant
    read after the segment's bulk lock for the chunk's users (read before it: only this
    operation's chunks, one at a time, take a live segment's kept rows): each user's row comes
    back when the chunk commits, and its history row says so then (not visible for a user the
    rollout already had in)."""
    ids = membership_store.retired_ids(session, segment.id, size, after=operation.cursor)
    if not ids:
        return False
    now = _moment(session, segment, None, membership_store.user_span(ids))
    already_in = _in_through_rollout(session, segment, ids, now) if segment.rollout_basis_points else []
    taken, restored = membership_store.restore_members(
        session,
        segment.id,
        segment.slug,
        ids,
        now,
        operation.actor,
        group=segment.exclusion_group,
        at=now,
        already_in=already_in,
    )
    operation.done = min(operation.total, operation.done + taken)
    operation.added += restored
    operation.cursor = ids[-1]
    return len(ids) == size


def _remove_unlisted(session: DbSession, operation: BulkOperation, segment: Segment, size: int) -> bool:
    """One window of a replace's removal pass: the next CHUNK member rows after the cursor
    (keyset on user id); those not listed, and members since before the operation started,
    are removed. Rows are only looked at, not locked, unless they go."""
    seen, last = membership_store.segment_window(session, "memberships", segment.id, operation.cursor, size)
    if not seen:
        return False
    leaving = membership_store.lock_unlisted_members(
        session,
        segment.id,
        operation_id=operation.id,
        after=operation.cursor,
        upto=last,
        added_before=operation.created_at,
    )
    if leaving:
        operation.removed += _remove(session, leaving, segment, Reason(operation.reason), operation.actor)
    operation.done = min(operation.total, operation.done + seen)
    operation.cursor = last
    return bool(seen == size)


def give_up(session: DbSession, operation: BulkOperation, error: str, now: datetime | None = None) -> None:
    """Mark the operation failed for good (no more attempts) and drop its ids."""
    operation.status, operation.finished_at, operation.error = (
        ReportStatus.FAILED,
        now or utcnow(),
        error[:500],
    )
    _drop_ids(session, operation)


def _drop_ids(session: DbSession, operation: BulkOperation) -> int:
    """Delete the operation's stored ids (it finished or failed for good); returns how many."""
    result = session.execute(
        text("DELETE FROM bulk_operation_ids WHERE operation_id = :op"), {"op": operation.id}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def finish(session: DbSession, operation: BulkOperation) -> None:
    """Mark the operation finished (its ids go) and record it as one segment activity entry,
    in the same transaction: a retried job finds it finished and records nothing again."""
    now = utcnow()
    operation.status, operation.finished_at = ReportStatus.FINISHED, now
    listed = _drop_ids(session, operation)
    kind = OperationKind(operation.kind)
    segment = session.get(Segment, operation.segment_id)
    if (
        kind in (OperationKind.DELETE_SEGMENT, OperationKind.RESTORE_SEGMENT, OperationKind.REEVALUATE_RULES)
        or segment is None
    ):
        return
    facts = {"operation": str(operation.id), "background": True, "reason": operation.reason}
    if kind == OperationKind.BULK_ADD:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.MEMBERS_ADDED,
            operation.actor,
            now,
            count=operation.added,
            updated=operation.updated,
            unchanged=listed - operation.added - operation.updated,
            **facts,
            **(
                {"skipped": operation.skipped, "exclusion_group": segment.exclusion_group}
                if operation.skipped
                else {}
            ),
        )
    elif kind == OperationKind.BULK_REMOVE:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.MEMBERS_REMOVED,
            operation.actor,
            now,
            count=operation.removed,
            **facts,
        )
    else:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.MEMBERS_REPLACED,
            operation.actor,
            now,
            count=listed,
            added=operation.added,
            updated=operation.updated,
            removed=operation.removed,
            unchanged=listed - operation.added - operation.updated,
            **facts,
        )
