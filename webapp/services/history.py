"""A user's membership history: stored events plus the rollout changes that touched them.

Explicit changes are stored as ``membership_events``. Rollout membership is never stored
per user: it is replayed from ``rollout_changes`` with the user's bucket (each change records
the segment's exclusion group and bucket ranges from then on). Replaying both in time order
gives a history whose last entry per segment is the user's real state; an entry is derived
whenever the effective membership (explicit, or in the rollout, not excluded and not
explicitly in another segment of its exclusion group) changes without a stored event saying
so. Scheduled changes that are due are applied first (rollout_state.materialize), so they
appear at their scheduled time with their scheduler as the actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from webapp.models import ExclusionGroup, Membership, MembershipEvent, RolloutChange, Segment
from webapp.models.enums import Action, Reason
from webapp.services import rollout, rollout_state
from webapp.services.common import DbSession, check_user_id, utcnow


@dataclass(frozen=True)
class HistoryEntry:
    user_id: int
    segment: str
    operation: Action
    occurred_at: datetime
    reason: Reason
    actor: str = ""


@dataclass
class _State:
    explicit: bool = False
    excluded: bool = False
    rollout_in: bool = False
    reported: bool = False
    group: str | None = None
    slug: str = ""

    def effective(self, group_holders: set[str]) -> bool:
        """``group_holders``: groups in which the user is explicitly in some segment."""
        if self.explicit:
            return True
        return self.rollout_in and not self.excluded and self.group not in group_holders


@dataclass(order=True)
class _Step:
    at: datetime
    order: int  # rollout changes first at equal times, then stored events by id
    key: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False)


def user_history(
    session: DbSession,
    user_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> list[HistoryEntry]:
    """Entries with ``start <= occurred_at < end`` (either bound optional), oldest first."""
    check_user_id(user_id)
    now = now or utcnow()
    rollout_state.materialize(session, now)
    return [e for e in _replay(session, user_id, end, now) if start is None or e.occurred_at >= start]


def _replay(session: DbSession, user_id: int, end: datetime | None, now: datetime) -> Iterator[HistoryEntry]:
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
    for stored_event in session.scalars(stored.order_by(MembershipEvent.occurred_at, MembershipEvent.id)):
        steps.append(_Step(stored_event.occurred_at, 1, stored_event.id, "event", stored_event))
    # Memberships past their expiry that the nightly purge has not removed yet.
    for segment_id, slug, expires_at in session.execute(pending):  # expires_at <= now: never NULL here
        fake = MembershipEvent(
            user_id=user_id,
            segment_id=segment_id,
            segment_slug=slug,
            action=Action.REMOVED,
            reason=Reason.TTL,
            occurred_at=expires_at,
            actor="system",
        )
        steps.append(_Step(fake.occurred_at, 1, 2**62, "event", fake))
    for change, slug, salt, scheme, group_salt in session.execute(
        changes.order_by(RolloutChange.changed_at, RolloutChange.id)
    ):
        if change.exclusion_group is not None and group_salt is not None:
            rule = rollout.Rule(
                rollout.SCHEME, group_salt, rollout.ranges_of(change.bucket_ranges, change.to_bp)
            )
        else:
            rule = rollout.Rule(scheme, salt, rollout.ranges_of(None, change.to_bp))
        steps.append(_Step(change.changed_at, 0, change.id, "rollout", (change, slug, rule)))
    steps.sort()

    states: dict[int, _State] = {}
    for step in steps:
        if step.kind == "event":
            event: MembershipEvent = step.payload
            state = states.setdefault(event.segment_id, _State())
            state.slug = event.segment_slug
            yield HistoryEntry(
                user_id,
                event.segment_slug,
                Action(event.action),
                event.occurred_at,
                Reason(event.reason),
                event.actor,
            )
            state.reported = event.action == Action.ADDED
            if event.action == Action.ADDED:
                state.explicit, state.excluded = True, False
            else:
                state.explicit = False
                if event.reason in (Reason.API, Reason.DASHBOARD) and state.rollout_in:
                    state.excluded = True
            reason, actor, groups = Reason.ROLLOUT, "system", {state.group}
        else:
            change, slug, rule = step.payload
            state = states.setdefault(change.segment_id, _State())
            groups = {state.group, change.exclusion_group}
            state.slug, state.group = slug, change.exclusion_group
            state.rollout_in = rule.covers(user_id)
            if change.reason == Reason.SEGMENT_DELETED:
                state.excluded = False
            reason, actor = Reason(change.reason), change.actor or "system"
        holders = {s.group for s in states.values() if s.explicit and s.group is not None}
        # The stepped segment and, through the group rule, its group's other segments.
        for other in states.values():
            if (other is state or (other.group is not None and other.group in groups)) and other.effective(
                holders
            ) != other.reported:
                other.reported = not other.reported
                yield HistoryEntry(
                    user_id,
                    other.slug,
                    Action.ADDED if other.reported else Action.REMOVED,
                    step.at,
                    reason,
                    actor,
                )
