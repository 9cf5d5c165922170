"""Segment lifecycle: create, list, read, update (description, rollout), delete; members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NoReturn

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from webapp.errors import Conflict, NotFound, ValidationFailed, detail
from webapp.models import Membership, RolloutExclusion, RolloutSchedule, Segment
from webapp.models.enums import Reason, SegmentEventKind
from webapp.rules import problem_code
from webapp.services.common import DbSession, clock, description_or_error, slug_problem, utcnow
from webapp.services.rollout import buckets as rollout
from webapp.services.rollout.allocation import RolloutState
from webapp.services.segments import events as activity_log
from webapp.services.segments.rollout_state import (
    apply_due_locked,
    catalog_changed,
    change_or_error,
    check_future,
    ensure_group,
    lock_rule_set,
    lock_scope,
    materialize,
    refuse_schedules_of_rules,
    require_version,
    rules_or_error,
    set_state,
    start_reevaluation,
    states,
    switch_rule_mode,
)

RULES_DEFAULT_BASIS_POINTS = 10_000  # a segment created with rules and no percentage: all who match

UNSET: object = object()


@dataclass(frozen=True)
class SegmentStats:
    members: int  # explicit, not expired
    exclusions: int  # users explicitly removed from the rollout


def _slug_or_error(slug: object, field: str = "slug") -> str:
    if (problem := slug_problem(slug)) is not None:
        message = problem.message.replace("slug", field, 1)
        code = "group_name_invalid" if field == "exclusion_group" else problem.code
        raise ValidationFailed(message, [detail(field, message, code=code, value=str(slug)[:80])])
    assert isinstance(slug, str)
    return slug


def group_or_error(group: object) -> str | None:
    """An exclusion group name (the slug rules) or None/"" for no group."""
    return None if group is None or group == "" else _slug_or_error(group, "exclusion_group")


def basis_points_or_error(percent: object) -> int:
    if percent is None:
        return 0
    try:
        return rollout.percent_to_basis_points(percent)
    except ValueError as exc:
        raise ValidationFailed(
            f"rollout_percent {exc}", [detail("rollout_percent", str(exc), code=problem_code(exc))]
        ) from None


def get_live_segment(
    session: DbSession, slug: str, lock: Literal["share", "update"] | None = None
) -> Segment:
    """The live segment with this slug, optionally row-locked; NotFound otherwise. Unlocked,
    it is read after due scheduled changes are applied (so its rollout is the one in force)."""
    _slug_or_error(slug)
    if lock is None:
        materialize(session, utcnow())
    stmt = select(Segment).where(Segment.slug == slug, Segment.is_live)
    if lock:
        stmt = stmt.with_for_update(read=lock == "share")
    segment = session.scalars(stmt).first()
    if segment is None:
        raise NotFound(
            f"segment {slug} does not exist",
            [detail("slug", "no such segment", code="unknown_segment", value=slug, slug=slug)],
        )
    return segment


def is_live_slug(session: DbSession, slug: str) -> bool:
    """Whether a live segment has this slug (nothing applied, nothing locked)."""
    return session.scalar(select(Segment.id).where(Segment.slug == slug, Segment.is_live)) is not None


def list_segments(
    session: DbSession, q: str = "", page: int = 1, per_page: int = 50
) -> tuple[list[Segment], int]:
    """Live segments whose slug or description contains ``q``, newest first, with the total."""
    materialize(session, utcnow())
    stmt = select(Segment).where(Segment.is_live)
    if "\x00" in q:  # PostgreSQL text cannot hold one
        raise ValidationFailed(
            "the search must not contain NUL characters", [detail("q", "contains a NUL", code="search_nul")]
        )
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(Segment.slug.ilike(pattern, escape="\\"), Segment.description.ilike(pattern, escape="\\"))
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.order_by(Segment.created_at.desc(), Segment.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
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
        select(func.count()).select_from(RolloutExclusion).where(RolloutExclusion.segment_id == segment.id)
    )
    return SegmentStats(members, exclusions or 0)


def create_segment(
    session: DbSession,
    slug: object,
    description: object = None,
    rollout_percent: object = None,
    exclusion_group: object = None,
    actor: str = "",
    now: datetime | None = None,
    rules: object = None,
) -> Segment:
    """Create a live segment with a fresh salt, optionally in an exclusion group (created on
    first use); Conflict when the slug is taken, 422 when the group has no room.

    With ``rules`` (issue 29) it answers by them from the start (rule mode: nobody is in until
    the re-evaluation operation queued here reaches them), at 100% unless ``rollout_percent``
    says otherwise (the percentage applies inside the matched audience)."""
    given, now = now, now or utcnow()
    group = group_or_error(exclusion_group)
    canonical = rules_or_error(rules)
    basis_points = (
        RULES_DEFAULT_BASIS_POINTS
        if canonical is not None and rollout_percent is None
        else basis_points_or_error(rollout_percent)
    )
    segment = Segment(
        slug=_slug_or_error(slug),
        description=description_or_error(description),
        rollout_basis_points=0,
        salt=rollout.new_salt(),
        created_at=now,
        rules=canonical,
        rules_version=0,
        rule_mode=canonical is not None,
    )
    try:
        with session.begin_nested():
            session.add(segment)
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"segment {slug} already exists",
            [detail("slug", "a live segment has this slug", code="slug_taken", value=slug, slug=slug)],
        ) from None
    activity_log.record(
        session,
        segment,
        SegmentEventKind.CREATED,
        actor,
        now,
        rollout_percent=basis_points / 100,
        exclusion_group=group,
        **({} if canonical is None else {"rules": canonical}),
    )
    if basis_points or group or canonical is not None:
        if group:
            ensure_group(session, group, now)
        locked = lock_scope(session, segment.id, group)
        if canonical is not None:  # (before the clock: no trait write commits between it and this)
            lock_rule_set(session)
        now = given or clock(session)
        apply_due_locked(session, locked, now)
        set_state(
            session,
            segment,
            change_or_error(states(locked), segment.id, basis_points, group),
            reason=Reason.ROLLOUT,
            actor=actor,
            at=now,
            force=canonical is not None,  # (recorded: history learns the segment's rule mode)
        )
        check_future(session, locked, now)
        if canonical is not None:
            start_reevaluation(session, segment, actor, now)
    catalog_changed(session)
    session.flush()
    return segment


def update_segment(
    session: DbSession,
    slug: str,
    description: object = UNSET,
    rollout_percent: object = UNSET,
    exclusion_group: object = UNSET,
    actor: str = "",
    now: datetime | None = None,
    expected_version: int | None = None,
    rules: object = UNSET,
) -> tuple[Segment, bool]:
    """Change description, rollout, exclusion group and/or rules (all validated before anything
    changes, each change recorded); returns the segment and whether its rollout or rules changed.

    Rules (issue 29; None removes them): a change of a rule segment's rules, percentage or group
    queues a re-evaluation of every user with traits (``rollout_state.start_reevaluation``); until
    it reaches a user, the user is answered as the previous evaluation had it. A plain segment
    given rules keeps its percentage and answers by its rollout until that operation has
    evaluated everyone, then by its rules (``membership.rules``); rules removed, it answers by its
    rollout at once.

    Moving into a group takes the rollout's share of the group's free buckets (422 if there is
    not enough) and is refused (409) while some user is an explicit member of this segment and
    of another of the group's segments. With ``expected_version`` (the catalog version a
    preview was computed on, services.impact) a rollout or group change is refused (409
    ``impact_changed``) once the catalog has moved on."""
    given, now = now, now or utcnow()
    new_description = None if description is UNSET else description_or_error(description)
    new_bp = None if rollout_percent is UNSET else basis_points_or_error(rollout_percent)
    new_group = UNSET if exclusion_group is UNSET else group_or_error(exclusion_group)
    new_rules = UNSET if rules is UNSET else rules_or_error(rules)
    segment = get_live_segment(session, slug)
    changed = False
    if (
        new_bp is not None
        or (new_group is not UNSET and new_group != segment.exclusion_group)
        or (new_rules is not UNSET and new_rules != segment.rules)
    ):
        changed = _change_rollout(
            session, segment, new_bp, new_group, actor, given, expected_version, new_rules
        )
    else:
        segment = get_live_segment(session, slug, lock="update")
    if new_description is not None and new_description != segment.description:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.DESCRIPTION_CHANGED,
            actor,
            now,
            before=segment.description[:200],
            after=new_description[:200],
        )
        segment.description = new_description
    session.flush()
    return segment, changed


def _change_rollout(
    session: DbSession,
    segment: Segment,
    new_bp: int | None,
    new_group: object,
    actor: str,
    given: datetime | None,
    expected_version: int | None = None,
    new_rules: object = UNSET,
) -> bool:
    """The rollout change (and rules change), stamped with the database clock read after its
    locks (``given``: a fixed clock), so it is ordered after every membership change it waited for."""
    if isinstance(new_group, str):
        ensure_group(session, new_group, given or utcnow())
    locked = lock_scope(session, segment.id, new_group if isinstance(new_group, str) else None)
    if segment.id not in locked:
        raise NotFound(
            f"segment {segment.slug} does not exist",
            [
                detail(
                    "slug", "no such segment", code="unknown_segment", value=segment.slug, slug=segment.slug
                )
            ],
        )
    require_version(session, expected_version)
    moves = new_group is not UNSET and new_group != segment.exclusion_group
    if segment.rules is not None or new_rules is not UNSET or moves:
        # the rule-set lock before the clock: no trait write evaluates this segment between the
        # instant this change is stamped with and its commit (membership.rules.rematch); a group
        # move too (a group's explicit members decide whether a rule row moves an answer)
        lock_rule_set(session)
    now = given or clock(session)
    apply_due_locked(session, locked, now)
    old = RolloutState(segment.rollout_basis_points, segment.exclusion_group)
    if isinstance(new_group, str) and new_group != old.group:
        refuse_explicit_overlap(session, segment, new_group, locked)
    target = old.basis_points if new_bp is None else new_bp
    new = change_or_error(states(locked), segment.id, target, ... if new_group is UNSET else new_group)
    rules_changed = new_rules is not UNSET and new_rules != segment.rules
    old_rules = segment.rules
    had_rules = old_rules is not None
    if rules_changed and not had_rules:
        refuse_schedules_of_rules(session, segment, adding_rules=True)
    changed = set_state(session, segment, new, reason=Reason.ROLLOUT, actor=actor, at=now)
    check_future(session, locked, now)
    if rules_changed:
        segment.rules = new_rules
        if new_rules is None:  # answering by its rollout again, at once
            switch_rule_mode(session, segment, False, actor, now)
        activity_log.record(
            session,
            segment,
            SegmentEventKind.RULES_CHANGED,
            actor,
            now,
            before=old_rules,
            rules=new_rules,
        )
    if rules_changed or (changed and segment.rules is not None):
        start_reevaluation(session, segment, actor, now)
        changed = True
    if new.group != old.group:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.GROUP_CHANGED,
            actor,
            now,
            before=old.group,
            after=new.group,
            rollout_percent=new.basis_points / 100,
        )
    if new.basis_points != old.basis_points:
        activity_log.record(
            session,
            segment,
            SegmentEventKind.ROLLOUT_CHANGED,
            actor,
            now,
            from_percent=old.basis_points / 100,
            to_percent=new.basis_points / 100,
        )
    return changed


def refuse_explicit_overlap(
    session: DbSession, segment: Segment, group: str, locked: dict[int, Segment]
) -> None:
    """409 when a user is an explicit member of ``segment`` and of another segment of ``group``."""
    others = [sid for sid, s in locked.items() if s.exclusion_group == group and sid != segment.id]
    if not others:
        return
    mine, theirs = aliased(Membership), aliased(Membership)
    now = utcnow()
    row = session.execute(
        select(theirs.segment_id, func.count())
        .select_from(mine)
        .join(theirs, (theirs.user_id == mine.user_id) & theirs.segment_id.in_(others))
        .where(mine.segment_id == segment.id, mine.live_at(now), theirs.live_at(now))
        .group_by(theirs.segment_id)
        .order_by(func.count().desc())
        .limit(1)
    ).first()
    if row is not None:
        refuse_overlap(f"explicit members of {segment.slug} are also", locked[row[0]].slug, group, row[1])


def refuse_overlap(who: str, other: str, group: str, users: int) -> NoReturn:
    """409 group_overlap: ``users`` explicit members (``who``) would be explicit members of two
    segments of exclusion group ``group``, the other being ``other``."""
    raise Conflict(
        f"{users:,} {who} explicit members of {other} in group {group}: remove them from one of the two first",
        [
            detail(
                "exclusion_group",
                "explicit members overlap",
                code="group_overlap",
                exclusion_group=group,
                segment=other,
                users=users,
            )
        ],
    )


def retire_segment(
    session: DbSession, slug: str, now: datetime | None, actor: str = "", expected_version: int | None = None
) -> tuple[Segment, int]:
    """Soft-delete a segment: it leaves the catalog (and every read) when this commits, and
    its slug and its group's buckets are free again; its pending scheduled changes are
    cancelled. Returns it with its live explicit member count; removing their rows is
    bulk.delete_segment's job."""
    found = get_live_segment(session, slug)
    locked = lock_scope(session, found.id)  # waits for writers holding a share lock
    if found.id not in locked:
        raise NotFound(
            f"segment {slug} does not exist",
            [detail("slug", "no such segment", code="unknown_segment", value=slug, slug=slug)],
        )
    segment = locked[found.id]
    require_version(session, expected_version)
    if segment.rules is not None or segment.exclusion_group is not None:
        lock_rule_set(session)  # (as a group move: membership.rules.rematch decides by the group)
    now = now or clock(session)  # after the lock: after every change it waited for
    # Changes already due were in force for every read: they happen (and show in history)
    # before the deletion; only those still ahead are cancelled.
    apply_due_locked(session, locked, now)
    left = member_counts(session, [segment.id], now)[segment.id]
    before = RolloutState(segment.rollout_basis_points, segment.exclusion_group)
    # (recorded even at 0%: a rule segment's rule matches may still hold users until its
    # re-evaluation reaches them, and history must see them leave at the deletion)
    set_state(
        session,
        segment,
        RolloutState(0),
        reason=Reason.SEGMENT_DELETED,
        actor=actor,
        at=now,
        force=segment.rule_mode,
    )
    session.execute(
        update(RolloutSchedule)
        .where(
            RolloutSchedule.segment_id == segment.id,
            RolloutSchedule.applied_at.is_(None),
            RolloutSchedule.cancelled_at.is_(None),
        )
        .values(cancelled_at=now, cancelled_by=actor)
    )
    segment.deleted_at = now
    segment.restorable = True  # its members and exclusions are kept (services.restore)
    activity_log.record(
        session,
        segment,
        SegmentEventKind.DELETED,
        actor,
        now,
        members=left,
        rollout_percent=before.basis_points / 100,
        exclusion_group=before.group,
    )
    session.flush()
    catalog_changed(session)
    return segment, left


def list_members(
    session: DbSession,
    segment: Segment,
    *,
    after: int = 0,
    limit: int = 50,
    user_id: int | None = None,
    now: datetime | None = None,
) -> list[Membership]:
    """Explicit, live members ordered by user id; keyset pagination via ``after``."""
    stmt = (
        select(Membership)
        .where(
            Membership.segment_id == segment.id,
            Membership.user_id > after,
            Membership.live_at(now or utcnow()),
        )
        .order_by(Membership.user_id)
        .limit(limit)
    )
    if user_id is not None:
        stmt = stmt.where(Membership.user_id == user_id)
    return list(session.scalars(stmt))
