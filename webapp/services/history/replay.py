"""A user's membership history: the changes of what reads answered them, replayed.

Explicit changes are stored as ``membership_events`` (each stamped with the instant it became
visible to reads). Rollout membership is never stored per user: it is replayed from
``rollout_changes`` with the user's bucket (each change records the segment's exclusion group
and bucket ranges from then on). The replay feeds both, in time order and one instant at a
time, to the membership rule (``membership_rule.step``): an entry is written exactly when the
user's membership of a segment flips, so there is never an ``added`` while in nor a
``removed`` while out, and the last entry per segment is the user's real state. A stored row
that flipped nothing (``visible`` false, or an old doubled row) still moves the user's own
state. Scheduled changes that are due are applied first (rollout_state.materialize), so they
appear at their scheduled time with their scheduler as the actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

from sqlalchemy import select, update

from webapp.models import (
    ExclusionGroup,
    Membership,
    MembershipEvent,
    RolloutChange,
    Segment,
    SegmentEvent,
    TraitEvent,
)
from webapp.models.enums import Action, Reason, RuleCause, SegmentEventKind
from webapp.services.common import DbSession, check_user_id, utcnow
from webapp.services.reads import rule as membership_rule
from webapp.services.rollout import buckets as rollout
from webapp.services.segments import rollout_state


@dataclass(frozen=True)
class Cause:
    """The change a history entry is credited to (``kind``): a stored explicit change of the
    user (``change``: api, dashboard, a bulk operation's row, a TTL, a deletion's or a restore's
    row), the user's traits changing (``traits``: a ``rule`` row written in that change, with the
    ``keys`` it set or deleted), or a segment-level change of ``segment`` — ``rules_changed``
    (its rules given or changed; ``created`` with them; ``rollout``, ``group`` and ``restored``
    too: a ``rule`` row a re-evaluation wrote, ``at`` the change, not when it reached the user),
    ``rollout`` (its percentage), ``rules`` (it
    began or stopped answering by its rules: a plain segment's first rules evaluated for every
    user, or its rules removed), ``group`` (a
    move into or out of an exclusion group), ``schedule`` (a scheduled change falling due, with
    its ``schedule_id``), ``deleted``, ``restored``. ``segment`` may differ from the entry's: a
    group's other segments move with one that changes."""

    kind: str
    segment: str
    at: datetime
    actor: str
    from_percent: float | None = None
    to_percent: float | None = None
    from_group: str | None = None
    to_group: str | None = None
    schedule_id: int | None = None
    keys: tuple[str, ...] | None = None  # kind traits: the trait keys that change set or deleted


@dataclass(frozen=True)
class HistoryEntry:
    user_id: int
    segment: str
    operation: Action
    occurred_at: datetime
    reason: Reason
    actor: str = ""
    cause: Cause | None = None


@dataclass(order=True)
class _Step:
    at: datetime
    order: int  # rollout changes first at equal times, then stored events by id
    key: int
    change: membership_rule.Change = field(compare=False)
    reason: Reason = field(compare=False)
    actor: str = field(compare=False, default="")
    stored: bool = field(compare=False, default=False)  # a stored row (not a rollout change)
    recorded: RolloutChange | None = field(compare=False, default=None)  # the rollout change
    row: MembershipEvent | None = field(compare=False, default=None)  # the stored row, if one


def user_history(
    session: DbSession,
    user_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    *,
    causes: bool = True,
) -> list[HistoryEntry]:
    """Entries with ``start <= occurred_at < end`` (either bound optional), oldest first, each
    with its cause (``causes`` false: None; a report's rows do not show it)."""
    check_user_id(user_id)
    now = now or utcnow()
    rollout_state.materialize(session, now)
    replayed = _replay(session, user_id, end, now, described_from=start, described=causes)
    return [e for e, _ in replayed if start is None or e.occurred_at >= start]


@dataclass
class RepairCounts:
    users: int = 0
    rows: int = 0
    hidden: int = 0  # visible rows that flipped nothing (doubled): made invisible
    shown: int = 0  # invisible rows that did flip a membership: made visible


def repair(session: DbSession, *, apply: bool, now: datetime | None = None) -> RepairCounts:
    """Make every stored row's ``visible`` say whether it moved the user's membership, by the
    replay (membership_rule): rows that databases written before the one rule hold doubled (an
    ``added`` while in, a ``removed`` while out) stop showing in reports and segment activity.
    Nothing is deleted: the replay still reads every row. With ``apply`` false, only counts."""
    now = now or utcnow()
    counts = RepairCounts()
    users = session.scalars(select(MembershipEvent.user_id).distinct().order_by(MembershipEvent.user_id))
    for user_id in users.all():
        shown = {
            cause.key for _, cause in _replay(session, user_id, None, now, described=False) if cause.stored
        }
        rows = session.execute(
            select(MembershipEvent.id, MembershipEvent.visible).where(MembershipEvent.user_id == user_id)
        ).all()
        hide = [row_id for row_id, visible in rows if visible and row_id not in shown]
        show = [row_id for row_id, visible in rows if not visible and row_id in shown]
        counts.users, counts.rows = counts.users + 1, counts.rows + len(rows)
        counts.hidden, counts.shown = counts.hidden + len(hide), counts.shown + len(show)
        if apply and (hide or show):
            for ids, visible in ((hide, False), (show, True)):
                if ids:
                    session.execute(
                        update(MembershipEvent).where(MembershipEvent.id.in_(ids)).values(visible=visible)
                    )
    return counts


def _replay(
    session: DbSession,
    user_id: int,
    end: datetime | None,
    now: datetime,
    *,
    described_from: datetime | None = None,
    described: bool = True,
) -> Iterator[tuple[HistoryEntry, _Step]]:
    """The user's entries before ``end``, each with the step it is credited to and, from
    ``described_from`` on (``described``), that change described as its ``cause``."""
    steps: list[_Step] = []
    stored = select(MembershipEvent).where(MembershipEvent.user_id == user_id)
    changes = (
        select(RolloutChange, Segment.slug, Segment.salt, Segment.hash_scheme, ExclusionGroup.salt)
        .join(Segment, Segment.id == RolloutChange.segment_id)
        .outerjoin(ExclusionGroup, ExclusionGroup.name == RolloutChange.exclusion_group)
    )
    pending = (
        select(Membership.segment_id, Segment.slug, Membership.expires_at)
        .join(Segment, Segment.id == Membership.segment_id)
        .where(Membership.user_id == user_id, Membership.expires_at <= now)
    )
    if end is not None:
        stored = stored.where(MembershipEvent.occurred_at < end)
        changes = changes.where(RolloutChange.changed_at < end)
        pending = pending.where(Membership.expires_at < end)
    # What the purge and the job have not done yet is read first, what they wrote after: one of
    # them committing in between then shows twice (the same change twice at one instant moves
    # nothing more), never not at all.
    # Memberships past their expiry that the nightly purge has not removed yet.
    for segment_id, slug, expires_at in session.execute(pending).all():
        assert expires_at is not None  # expires_at <= now
        change = membership_rule.Change(segment_id, "expire", slug)
        steps.append(_Step(expires_at, 1, 2**62, change, Reason.TTL, "system", stored=True))
    # Scheduled changes due by now that the job has not applied yet count from their ``at``.
    recorded_changes: list[tuple[Any, ...]] = []
    for virtual in rollout_state.unapplied(session, now):
        if end is None or virtual.changed_at < end:
            segment = session.get(Segment, virtual.segment_id)
            group = session.get(ExclusionGroup, virtual.exclusion_group) if virtual.exclusion_group else None
            assert segment is not None
            recorded_changes.append(
                (virtual, segment.slug, segment.salt, segment.hash_scheme, group.salt if group else None)
            )
    for row in session.scalars(stored.order_by(MembershipEvent.occurred_at, MembershipEvent.id)):
        steps.append(_stored_step(row))
    recorded_changes += [
        tuple(row) for row in session.execute(changes.order_by(RolloutChange.changed_at, RolloutChange.id))
    ]
    for recorded, slug, salt, scheme, group_salt in recorded_changes:
        if recorded.exclusion_group is not None and group_salt is not None:
            rule = rollout.Rule(
                rollout.SCHEME, group_salt, rollout.ranges_of(recorded.bucket_ranges, recorded.to_bp)
            )
        else:
            rule = rollout.Rule(scheme, salt, rollout.ranges_of(None, recorded.to_bp))
        catalog_side = membership_rule.Change(
            recorded.segment_id,
            "rollout",
            slug,
            covered=rule.covers(user_id),
            group=recorded.exclusion_group,
            live=recorded.reason != Reason.SEGMENT_DELETED,
            rule_mode=bool(recorded.rule_mode),
        )
        steps.append(
            _Step(
                recorded.changed_at,
                0,
                recorded.id,
                catalog_side,
                Reason(recorded.reason),
                recorded.actor,
                recorded=recorded,
            )
        )
    steps.sort()

    rule_causes = _RuleCauses(session, user_id, steps)
    state = membership_rule.State()
    groups: dict[int, str | None] = {}  # each segment's group before the instant
    modes: dict[int, bool] = {}  # each segment's rule mode before the instant
    for at, same_time in groupby(steps, key=attrgetter("at")):
        instant = list(same_time)
        state, flips = membership_rule.step(state, (s.change for s in instant))
        for segment_id, action in flips:
            why = _cause(instant, segment_id, action)
            describe = described and (described_from is None or at >= described_from)
            entry = HistoryEntry(
                user_id,
                state.segments[segment_id].slug,
                action,
                at,
                why.reason,
                why.actor or "system",
                _described(why, state, groups, modes, rule_causes) if describe else None,
            )
            yield entry, why
        for s in instant:
            if s.recorded is not None:
                groups[s.recorded.segment_id] = s.recorded.exclusion_group
                modes[s.recorded.segment_id] = bool(s.recorded.rule_mode)


class _RuleCauses:
    """The changes a user's ``rule`` rows name (``cause``, ``cause_at``: migration 0020): the
    user's trait change (its keys, from ``trait_events``) or the segment's change (from its
    ``segment_events``), each read once per replay and only when an entry is described."""

    # a segment's changes a re-evaluation follows, the first present at the instant describing it
    _SEGMENT_KINDS = (
        SegmentEventKind.RULES_CHANGED,
        SegmentEventKind.ROLLOUT_CHANGED,
        SegmentEventKind.GROUP_CHANGED,
        SegmentEventKind.RESTORED,
        SegmentEventKind.CREATED,
    )
    _NAMES = {SegmentEventKind.RESTORED: "restored", SegmentEventKind.CREATED: "created"}

    def __init__(self, session: DbSession, user_id: int, steps: list[_Step]) -> None:
        self.session, self.user_id, self.steps = session, user_id, steps
        self._keys: dict[datetime, set[str]] | None = None  # read when the first trait cause is
        self.changes: dict[tuple[int, datetime], Cause] = {}

    def describe(self, row: MembershipEvent, slug: str) -> Cause | None:
        """A rule row's cause, None for another row (or a rule row written before 0020)."""
        actor = row.actor or "system"
        if row.cause_at is None:
            return None
        if row.cause == RuleCause.TRAITS:
            return Cause("traits", slug, row.cause_at, actor, keys=self._trait_keys(row.cause_at))
        key = (row.segment_id, row.cause_at)
        if key not in self.changes:
            self.changes[key] = self._segment_change(row.segment_id, row.cause_at, slug, actor)
        return self.changes[key]

    def _trait_keys(self, at: datetime) -> tuple[str, ...]:
        """The keys of the user's trait change at ``at`` (the replay's trait causes read in one
        query, the first time one is described)."""
        if self._keys is None:
            instants = {
                s.row.cause_at
                for s in self.steps
                if s.row is not None and s.row.cause == RuleCause.TRAITS and s.row.cause_at is not None
            }
            self._keys = {}
            trait_rows = self.session.execute(
                select(TraitEvent.occurred_at, TraitEvent.keys).where(
                    TraitEvent.user_id == self.user_id, TraitEvent.occurred_at.in_(sorted(instants))
                )
            )
            for when, keys in trait_rows:
                self._keys.setdefault(when, set()).update(keys)
        return tuple(sorted(self._keys.get(at, ())))

    def _segment_change(self, segment_id: int, at: datetime, slug: str, actor: str) -> Cause:
        """The segment's change a re-evaluation followed: its activity entries at the latest
        instant up to ``at``, else its creation (a segment created with rules logs that by the
        app's clock a moment before the database's clock stamps the change: an app clock ahead
        would put it after). Changes that superseded one another before the operation reached
        the user are credited to the newest, whose operation wrote the row."""
        event = SegmentEvent
        rows = self.session.execute(
            select(event.kind, event.occurred_at, event.actor, event.detail)
            .where(
                event.segment_id == segment_id,
                event.kind.in_(self._SEGMENT_KINDS),
                (event.occurred_at <= at) | (event.kind == SegmentEventKind.CREATED),
            )
            .order_by((event.occurred_at <= at).desc(), event.occurred_at.desc())
            .limit(len(self._SEGMENT_KINDS))
        ).all()
        latest = {
            kind: (when, who, detail) for kind, when, who, detail in rows if when == rows[0].occurred_at
        }
        kind = next((k for k in self._SEGMENT_KINDS if k in latest), None)
        if kind is None:
            return Cause("rules_changed", slug, at, actor)
        when, who, detail = latest[kind]
        who = who or actor
        if kind == SegmentEventKind.ROLLOUT_CHANGED:
            return Cause(
                "rollout",
                slug,
                when,
                who,
                from_percent=detail.get("from_percent"),
                to_percent=detail.get("to_percent"),
            )
        if kind == SegmentEventKind.GROUP_CHANGED:
            return Cause(
                "group", slug, when, who, from_group=detail.get("before"), to_group=detail.get("after")
            )
        return Cause(self._NAMES.get(kind, "rules_changed"), slug, when, who)


def _described(
    why: _Step,
    state: membership_rule.State,
    groups: dict[int, str | None],
    modes: dict[int, bool],
    rule_causes: _RuleCauses,
) -> Cause:
    """The entry's cause as the dashboard and the API show it."""
    slug = why.change.slug or state.segments[why.change.segment_id].slug
    actor = why.actor or "system"
    recorded = why.recorded
    if recorded is None:
        named = rule_causes.describe(why.row, slug) if why.row is not None else None
        return named or Cause("change", slug, why.at, actor)
    before = groups.get(recorded.segment_id)
    if recorded.reason == Reason.SEGMENT_DELETED:
        kind = "deleted"
    elif recorded.reason == Reason.RESTORED:
        kind = "restored"
    elif recorded.schedule_id is not None:
        kind = "schedule"
    elif bool(recorded.rule_mode) != modes.get(recorded.segment_id, False):
        kind = "rules"  # the segment began (or stopped) answering by its rules
    elif recorded.exclusion_group != before and recorded.segment_id in groups:
        kind = "group"
    else:
        kind = "rollout"
    return Cause(
        kind,
        slug,
        why.at,
        actor,
        from_percent=recorded.from_bp / 100,
        to_percent=recorded.to_bp / 100,
        from_group=before,
        to_group=recorded.exclusion_group,
        schedule_id=recorded.schedule_id,
    )


def _stored_step(row: MembershipEvent) -> _Step:
    """A stored row as the change of the user's own rows it records."""
    reason = Reason(row.reason)
    if reason == Reason.RULE:  # the user's rule match row written or deleted
        match = membership_rule.Change(
            row.segment_id, "match", row.segment_slug, covered=row.action == Action.ADDED
        )
        return _Step(row.occurred_at, 1, row.id, match, reason, row.actor, stored=True, row=row)
    if row.action == Action.ADDED:
        kind, exclude = "add", False
    else:  # a removal asked for (api, dashboard) also excludes a user the rollout covers
        kind, exclude = ("remove", True) if reason in (Reason.API, Reason.DASHBOARD) else ("expire", False)
    change = membership_rule.Change(row.segment_id, kind, row.segment_slug, exclude=exclude)
    return _Step(row.occurred_at, 1, row.id, change, reason, row.actor, stored=True)


def _adds(change: membership_rule.Change) -> bool:
    """Does a stored row's change add (an explicit add, a rule match written)?"""
    return change.kind == "add" or (change.kind == "match" and change.covered)


def _cause(instant: list[_Step], segment_id: int, action: Action) -> _Step:
    """Which change of an instant an entry is credited to: the segment's own stored row of the
    same direction, else its own rollout change, else the instant's first stored row or
    rollout change (an exclusion group's other segments move with it)."""
    own = [s for s in instant if s.change.segment_id == segment_id]
    adds = action == Action.ADDED
    stored = [s for s in own if s.stored and _adds(s.change) == adds]
    return next(iter(stored), None) or next((s for s in own if not s.stored), None) or (own or instant)[0]
