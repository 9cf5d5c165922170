"""The one writer of a segment's rollout state (percentage, exclusion group, bucket ranges).

Every change — a PATCH, a move into or out of a group, a scheduled change falling due, a
deletion — goes through :func:`set_state`: it updates the segment row, appends a
``rollout_changes`` row (replayed by history) and bumps the catalog version (revalidated by
every read). Changes that touch a group lock its row first, then the segments' rows in id
order, so two raises in one group never both take the same free buckets.

Scheduled changes count at read time from their ``at`` whether or not they were applied
(read_path replays them); :func:`apply_due` materialises them — by the minutely job, and
before any other rollout change so that changes apply in time order.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, create_engine, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from webapp.errors import Conflict, ValidationFailed, detail
from webapp.models import (
    BulkOperation,
    CatalogVersion,
    ExclusionGroup,
    RolloutChange,
    RolloutSchedule,
    Segment,
    UserTraits,
)
from webapp.models.enums import OperationKind, Reason, ReportStatus, SegmentEventKind
from webapp.platform.queue import enqueue_after_commit
from webapp.services import targeting
from webapp.services.common import DbSession, iso, utcnow
from webapp.services.rollout import buckets as rollout
from webapp.services.rollout.allocation import NoRoom, RolloutState, change
from webapp.services.segments import events as activity_log

LOCK_NOT_AVAILABLE = "55P03"
ATTEMPTS = 10  # lock_scope's: a segment moved by another writer in each of them gives up (a 500)


def state_of(segment: Segment) -> RolloutState:
    group = segment.exclusion_group
    ranges = rollout.ranges_of(segment.bucket_ranges, segment.rollout_basis_points) if group else ()
    return RolloutState(segment.rollout_basis_points, group, ranges)


def rule_of(segment: Segment, group_salt: str | None) -> rollout.Rule:
    """Who the segment's rollout covers (``group_salt``: its group's, when it has one)."""
    state = state_of(segment)
    if state.group is not None and group_salt is not None:
        return rollout.Rule(rollout.SCHEME, group_salt, state.ranges)
    return rollout.Rule(segment.hash_scheme, segment.salt, rollout.ranges_of(None, state.basis_points))


def ensure_group(session: DbSession, name: str, now: datetime) -> None:
    session.execute(
        insert(ExclusionGroup)
        .values(name=name, salt=rollout.group_salt(name), created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def lock_scope(
    session: DbSession, segment_id: int | Collection[int], *groups: str | None
) -> dict[int, Segment]:
    """Lock the groups (by name), then the segments and every live segment of those groups (id
    order, one statement): the global lock order. Returns the locked live segments by id. The
    segments' own groups are included.

    Each attempt runs in a savepoint: when a segment turns out to have moved to a group not
    locked (its move committed between the read of its group and the locks), the attempt is
    rolled back, which lets go of the rows it locked, and the next one starts again from the
    groups. Locking the new group while holding the segments (as before) waited against the
    order for a writer of that group who waited for those segments: a deadlock for PostgreSQL to
    break (tests/services/test_group_move_deadlocks.py)."""
    ids = [segment_id] if isinstance(segment_id, int) else sorted(segment_id)
    for _ in range(ATTEMPTS):
        try:
            with session.begin_nested():
                locked = _lock_attempt(session, ids, groups)
        except _Moved:
            continue
        return locked
    raise RuntimeError("a segment kept moving between groups")


class _Moved(Exception):
    """A segment's group changed between the read of it and the locks (lock_scope retries)."""


def _lock_attempt(session: DbSession, ids: list[int], groups: tuple[str | None, ...]) -> dict[int, Segment]:
    current = session.scalars(
        select(Segment).where(Segment.id.in_(ids)).execution_options(populate_existing=True)
    ).all()
    names = sorted({g for g in (*(s.exclusion_group for s in current), *groups) if g})
    if names:
        session.execute(
            select(ExclusionGroup.name)
            .where(ExclusionGroup.name.in_(names))
            .order_by(ExclusionGroup.name)
            .with_for_update()
        )
    rows = session.scalars(
        select(Segment)
        .where(or_(Segment.id.in_(ids), Segment.exclusion_group.in_(names)), Segment.is_live)
        .order_by(Segment.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    locked = {s.id: s for s in rows}
    if not all(locked[sid].exclusion_group in (None, *names) for sid in ids if sid in locked):
        raise _Moved
    return locked


def set_state(
    session: DbSession,
    segment: Segment,
    new: RolloutState,
    *,
    reason: Reason,
    actor: str,
    at: datetime,
    schedule_id: int | None = None,
    force: bool = False,
) -> bool:
    """Make ``new`` the segment's rollout state (recorded); False when nothing changes (unless
    ``force``: a restore is recorded whatever its state, history replays it as the return).
    ``schedule_id``: the scheduled change this applies."""
    old = state_of(segment)
    if new == old and not force:
        return False
    segment.rollout_basis_points = new.basis_points
    segment.exclusion_group = new.group
    segment.bucket_ranges = rollout.flat(new.ranges) if new.group else None
    session.add(
        RolloutChange(
            segment_id=segment.id,
            from_bp=old.basis_points,
            to_bp=new.basis_points,
            reason=reason,
            changed_at=at,
            actor=actor,
            exclusion_group=new.group,
            bucket_ranges=segment.bucket_ranges,
            schedule_id=schedule_id,
            rule_mode=segment.rule_mode,
        )
    )
    catalog_changed(session)
    return True


# -- rules (issue 29) ----------------------------------------------------------------------

REEVALUATE_JOB = "webapp.jobs.tasks.run_bulk_operation"  # (membership.bulk.RUN_JOB: the same job)
BULK_LOCK_SPACE = (
    3  # membership.store.BULK_LOCK_SPACE (that layer sits above this one; a test keeps them equal)
)
# The set of rule segments and what decides their matches (rules, percentage, group, mode): taken
# exclusive by every change of them after its segment locks and before it reads the clock that
# stamps it (create and update with rules, restore, the switch of mode; start_reevaluation and
# switch_rule_mode take it again, re-entrant; and group moves, deletions and restores of grouped
# segments, whose explicit members decide whether a rule row moves an answer), and shared by trait writes (membership.rules.rematch)
# before their bulk locks, so a trait write evaluates exactly the rule segments and rules in force
# when it commits, or commits before such a change (whose re-evaluation then sees its traits),
# and its rows are never stamped on the wrong side of such a change. Trait writes take no segment
# row lock (rule_matches has no foreign key), so a change holding its rows while it waits for
# this lock closes no cycle. Held until the transaction ends.
RULE_SET_LOCK = (5, 0)


def lock_rule_set(session: DbSession, *, shared: bool = False) -> None:
    """RULE_SET_LOCK, exclusive (a change of rule segments) or shared (a trait write)."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    session.execute(
        text(f"SELECT {function}(:space, :key)"), {"space": RULE_SET_LOCK[0], "key": RULE_SET_LOCK[1]}
    )


def rules_or_error(raw: object) -> list[dict[str, Any]] | None:
    """Rules as stored: the canonical form of ``raw`` (webapp.services.targeting), None for none;
    422 naming every problem otherwise."""
    if raw is None:
        return None
    return targeting.parse(raw).canonical()


def refuse_schedules_of_rules(session: DbSession, segment: Segment, *, adding_rules: bool) -> None:
    """409 ``rules_with_schedule``: a rule segment takes no scheduled changes (its rows are
    re-evaluated by an operation, which cannot be exact to a scheduled second), and a segment
    with pending scheduled changes gets no rules until they are applied or cancelled
    (``adding_rules``: the rules are being given, else a schedule is being added)."""
    waiting = pending(session, [segment.id]) if adding_rules else []
    if (adding_rules and not waiting) or (not adding_rules and segment.rules is None):
        return
    raise Conflict(
        f"segment {segment.slug}: rules and scheduled rollout changes cannot be combined ("
        + (
            f"cancel its {len(waiting)} scheduled change(s) first)"
            if adding_rules
            else "it has rules: change its rollout now, its users are evaluated again in the background)"
        ),
        [
            detail(
                "rules" if adding_rules else "at",
                "rules and scheduled rollout changes cannot be combined",
                code="rules_with_schedule",
                slug=segment.slug,
                schedules=len(waiting),
            )
        ],
    )


def start_reevaluation(session: DbSession, segment: Segment, actor: str, now: datetime) -> BulkOperation:
    """The segment's rules, percentage or group changed (or it came back): bump its
    ``rules_version`` and queue the operation that evaluates every user with traits again for
    that version (membership.rules: chunked, resumable; an older one still running stops at its
    next chunk, superseded). Until it reaches a user, reads and history answer them as the
    previous evaluation did."""
    lock_rule_set(session)
    segment.rules_version = (segment.rules_version or 0) + 1
    total = session.scalar(select(func.count()).select_from(UserTraits)) or 0
    operation = BulkOperation(
        id=uuid.uuid4(),
        kind=OperationKind.REEVALUATE_RULES,
        segment_id=segment.id,
        slug=segment.slug,
        status=ReportStatus.QUEUED,
        total=total,
        done=0,
        added=0,
        updated=0,
        removed=0,
        cursor=0,
        phase=0,
        reason=Reason.RULE,
        actor=actor,
        attempts=0,
        created_at=now,
        rules_version=segment.rules_version,
    )
    session.add(operation)
    session.flush()
    enqueue_after_commit(REEVALUATE_JOB, str(operation.id), job_id=f"bulk-{operation.id}")
    return operation


def switch_rule_mode(session: DbSession, segment: Segment, on: bool, actor: str, at: datetime) -> None:
    """The segment answers by its rule matches from ``at`` (``on``) or by its rollout's buckets
    again: recorded as a rollout change of the same state flagged with the new mode (history
    replays that instant's flips like any rollout change), the catalog version bumped."""
    if segment.rule_mode == on:
        return
    lock_rule_set(session)
    # the segment's bulk lock, exclusive (after its row, as every holder takes them): a trait
    # write evaluating it (membership.rules.rematch, shared) decides its rows' visibility under
    # one mode, before or after this switch
    session.execute(
        text("SELECT pg_advisory_xact_lock(:space, :segment)"),
        {"space": BULK_LOCK_SPACE, "segment": segment.id},
    )
    segment.rule_mode = on
    set_state(session, segment, state_of(segment), reason=Reason.ROLLOUT, actor=actor, at=at, force=True)


def catalog_version(session: DbSession) -> int:
    """The catalog version this transaction sees (the read path's revalidation counter)."""
    return int(session.scalar(select(CatalogVersion.version).where(CatalogVersion.id == 1)) or 0)


def require_version(session: DbSession, expected: int | None) -> None:
    """409 ``impact_changed`` when the catalog moved on since a preview computed at ``expected``
    (None: no preview to hold the change to). Called after the change's locks, so every change
    of its scope that committed before is counted."""
    if expected is None:
        return
    current = catalog_version(session)
    if current != expected:
        raise Conflict(
            f"the segments changed since the preview (catalog version {expected}, now {current}): "
            "preview the change again and confirm its new numbers",
            [
                detail(
                    "catalog_version",
                    "the preview is out of date",
                    code="impact_changed",
                    expected=expected,
                    catalog_version=current,
                )
            ],
        )


def catalog_changed(session: DbSession) -> None:
    """Mark the segment catalog changed by this transaction (the read path revalidates
    against this version; see read_path)."""
    session.execute(
        update(CatalogVersion).where(CatalogVersion.id == 1).values(version=CatalogVersion.version + 1)
    )


def states(locked: dict[int, Segment]) -> dict[int, RolloutState]:
    return {sid: state_of(s) for sid, s in locked.items()}


def change_or_error(
    current: dict[int, RolloutState], segment_id: int, basis_points: int, group: str | None | object = ...
) -> RolloutState:
    """allocation.change, with a group's lack of room as a 422 naming the group."""
    try:
        return change(current, segment_id, basis_points, group=group)
    except NoRoom as exc:
        ceiling, free = exc.ceiling / 100, exc.available / 100
        raise ValidationFailed(
            f"rollout_percent can be at most {ceiling:g}% for this segment in exclusion group {exc.group} "
            f"(its rollouts share 100%; {free:g}% is free)",
            [
                detail(
                    "rollout_percent",
                    f"at most {ceiling:g}% fits this segment in group {exc.group} ({free:g}% is free)",
                    code="group_full",
                    exclusion_group=exc.group,
                    max_percent=ceiling,
                    free_percent=free,
                )
            ],
        ) from None


def pending(
    session: DbSession,
    segment_ids: Iterable[int],
    *,
    due_by: datetime | None = None,
    after: datetime | None = None,
) -> list[RolloutSchedule]:
    """Scheduled changes not applied nor cancelled, in time order."""
    stmt = select(RolloutSchedule).where(
        RolloutSchedule.segment_id.in_(list(segment_ids)),
        RolloutSchedule.applied_at.is_(None),
        RolloutSchedule.cancelled_at.is_(None),
    )
    if due_by is not None:
        stmt = stmt.where(RolloutSchedule.at <= due_by)
    if after is not None:
        stmt = stmt.where(RolloutSchedule.at > after)
    return list(session.scalars(stmt.order_by(RolloutSchedule.at, RolloutSchedule.id)))


def planned(
    current: dict[int, RolloutState], due: Iterable[RolloutSchedule]
) -> list[tuple[RolloutSchedule, RolloutState, RolloutState]]:
    """Each due scheduled change with the state before and after it, applied in order over
    ``current`` (every live segment of the groups concerned), clamped to a group's room."""
    current, steps = dict(current), []
    for entry in due:
        old = current[entry.segment_id]
        current[entry.segment_id] = new = change(
            current, entry.segment_id, entry.rollout_basis_points, clamp=True
        )
        steps.append((entry, old, new))
    return steps


def apply_due_locked(session: DbSession, locked: dict[int, Segment], now: datetime) -> int:
    """Apply the due scheduled changes of the locked segments, each recorded at its own time
    and with its scheduler as the actor; how many were applied."""
    due = pending(session, locked, due_by=now)
    for entry, old, new in planned(states(locked), due):
        segment = locked[entry.segment_id]
        set_state(
            session,
            segment,
            new,
            reason=Reason.ROLLOUT,
            actor=entry.created_by,
            at=entry.at,
            schedule_id=entry.id,
        )
        entry.applied_at = now
        activity_log.record(
            session,
            segment,
            SegmentEventKind.ROLLOUT_CHANGED,
            entry.created_by,
            entry.at,
            from_percent=old.basis_points / 100,
            to_percent=new.basis_points / 100,
            scheduled=True,
            schedule_id=entry.id,
        )
    if due:
        catalog_changed(session)  # the pending list the catalog holds changed
    return len(due)


def unapplied(session: DbSession, now: datetime) -> list[RolloutChange]:
    """The ``rollout_changes`` rows that applying the changes due by ``now`` would write (not
    added to the session, nothing locked): what history counts from their ``at`` before the
    job has applied them, exactly as reads do."""
    due = list(
        session.scalars(
            select(RolloutSchedule).where(*_due(now)).order_by(RolloutSchedule.at, RolloutSchedule.id)
        )
    )
    if not due:
        return []
    ids = {entry.segment_id for entry in due}
    scope = session.scalars(select(Segment).where(Segment.id.in_(ids), Segment.is_live)).all()
    names = {s.exclusion_group for s in scope if s.exclusion_group}
    if names:
        scope = session.scalars(
            select(Segment).where(
                or_(Segment.id.in_(ids), Segment.exclusion_group.in_(names)), Segment.is_live
            )
        ).all()
    live = {s.id: s for s in scope}
    rows = []
    for entry, old, new in planned(states(live), [e for e in due if e.segment_id in live]):
        if new != old:
            rows.append(
                RolloutChange(
                    id=0,
                    segment_id=entry.segment_id,
                    from_bp=old.basis_points,
                    to_bp=new.basis_points,
                    reason=Reason.ROLLOUT,
                    changed_at=entry.at,
                    actor=entry.created_by,
                    exclusion_group=new.group,
                    bucket_ranges=rollout.flat(new.ranges) if new.group else None,
                    schedule_id=entry.id,
                )
            )
    return rows


def check_future(
    session: DbSession,
    locked: dict[int, Segment],
    now: datetime,
    extra: tuple[int, datetime, int] | None = None,
    current: dict[int, RolloutState] | None = None,
) -> None:
    """422 when a pending scheduled change (or ``extra``: segment id, at, bp) would not fit
    its group once the changes before it apply (``current``: the states to start from, the
    locked segments' own by default)."""
    current = dict(current) if current is not None else states(locked)
    steps = [(e.segment_id, e.at, e.rollout_basis_points) for e in pending(session, locked, after=now)]
    if extra is not None:
        steps.append(extra)
    for segment_id, at, basis_points in sorted(steps, key=lambda step: step[1]):
        try:
            current[segment_id] = change(current, segment_id, basis_points)
        except NoRoom as exc:
            slug = locked[segment_id].slug
            raise ValidationFailed(
                f"exclusion group {exc.group} would have only {exc.available / 100:g}% left for the change "
                f"of {slug} scheduled at {iso(at)}",
                [
                    detail(
                        "rollout_percent",
                        f"the change of {slug} at {iso(at)} would not fit group {exc.group}",
                        code="schedule_wont_fit",
                        exclusion_group=exc.group,
                        slug=slug,
                        at=iso(at),
                    )
                ],
            ) from None


def apply_due(session: DbSession, now: datetime | None = None) -> int:
    """Apply every due scheduled change (the minutely job), every scope locked at once in the
    global order (groups by name, then segments by id)."""
    now = now or utcnow()
    segment_ids = session.scalars(select(RolloutSchedule.segment_id).where(*_due(now)).distinct()).all()
    if not segment_ids:
        return 0
    return apply_due_locked(session, lock_scope(session, segment_ids), now)


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        RolloutSchedule.applied_at.is_(None),
        RolloutSchedule.cancelled_at.is_(None),
        RolloutSchedule.at <= now,
    )


def materialize(session: DbSession, now: datetime) -> None:
    """Apply due scheduled changes before a page shows segments, in a short transaction of its
    own (:func:`own_transaction_bind`) that commits at once and never waits for a lock: taken
    inside the caller's transaction, its locks (other segments, before the caller's own) would
    break the global lock order and deadlock with writers. When a row is locked it does nothing:
    reads and history already count due changes from their ``at`` (read_path, history), and the
    minutely job and every writer of a rollout apply them under their own locks."""
    if session.scalar(select(RolloutSchedule.id).where(*_due(now)).limit(1)) is None:
        return
    with Session(own_transaction_bind(session), join_transaction_mode="create_savepoint") as own:
        try:
            own.execute(text("SET LOCAL lock_timeout = '20ms'"))
            applied = apply_due(own, now)
            own.execute(text("SET LOCAL lock_timeout = DEFAULT"))  # (outlives a savepoint's release)
            own.commit()
        except OperationalError as exc:
            own.rollback()
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            return
    if applied:
        session.expire_all()  # rows it loaded before are read again, with the changes


OWN_TRANSACTION_BIND = "own_transaction_bind"  # a key of Session.info


def own_transaction_bind(session: DbSession) -> Engine | Connection:
    """Where :func:`materialize` opens its own transaction: the connection a session's maker
    names in ``Session.info[OWN_TRANSACTION_BIND]`` (its own transaction then is a savepoint in
    that connection's; the tests' ``db_session`` names its rolled-back connection), else a
    pool-less engine on the session's database (:func:`_side_engine`)."""
    named: Connection | None = session.info.get(OWN_TRANSACTION_BIND)
    return named if named is not None else _side_engine(session.get_bind().engine)


_side_engines: dict[str, Engine] = {}


def _side_engine(engine: Engine) -> Engine:
    """An engine without a pool on the same database, for :func:`materialize`'s own short
    transaction: a second connection from the request's pool could wait forever once every
    pooled connection is held by a request waiting for its own second one (seen with 100
    threads over 40 connections). Due changes exist only until the minutely job applies them,
    so this connection is rarely opened."""
    key = engine.url.render_as_string(hide_password=False)
    if key not in _side_engines:
        _side_engines[key] = create_engine(engine.url, poolclass=NullPool)
    return _side_engines[key]


def preview_share(
    session: DbSession, segment: Segment, basis_points: int, sample: int, group: str | None | object = ...
) -> int:
    """How many of the user ids 1..``sample`` the segment's rollout would cover at
    ``basis_points`` in ``group`` (``...``: its own; None: no group), with the group's buckets
    as a change would allocate them now (a group it would join: in that group's free space and
    hash space, the salt a new group will have)."""
    target = segment.exclusion_group if group is ... else group
    assert target is None or isinstance(target, str)
    if target is None:
        rule = rollout.Rule(segment.hash_scheme, segment.salt, rollout.ranges_of(None, basis_points))
    else:
        stored = session.get(ExclusionGroup, target)
        members = session.scalars(
            select(Segment).where(Segment.is_live, Segment.exclusion_group == target)
        ).all()
        states = {s.id: state_of(s) for s in members}
        states[segment.id] = state_of(segment)
        state = change(states, segment.id, basis_points, group=target, clamp=True)
        if stored is not None:
            salt = stored.salt
        elif target == segment.exclusion_group:
            salt = segment.salt
        else:
            salt = rollout.group_salt(target)
        rule = rollout.Rule(rollout.SCHEME, salt, state.ranges)
    return rollout.share(rule, range(1, sample + 1))
