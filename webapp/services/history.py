"""A user's membership history: stored events plus the rollout changes that touched them.

Explicit changes are stored as ``membership_events``. Rollout membership is never stored
per user: it is replayed from ``rollout_changes`` with the user's bucket. Replaying both in
time order gives a history whose last entry per segment is the user's real state; an entry
is derived whenever the effective membership (explicit, or in the rollout and not excluded)
changes without a stored event saying so.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from webapp.models import Membership, MembershipEvent, RolloutChange, Segment
from webapp.models.enums import Action, Reason
from webapp.services import rollout
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

    @property
    def effective(self) -> bool:
        return self.explicit or (self.rollout_in and not self.excluded)


@dataclass(order=True)
class _Step:
    at: datetime
    order: int  # rollout changes first at equal times, then stored events by id
    key: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False)


def user_history(session: DbSession, user_id: int, start: datetime | None = None,
                 end: datetime | None = None, now: datetime | None = None) -> list[HistoryEntry]:
    """Entries with ``start <= occurred_at < end`` (either bound optional), oldest first."""
    check_user_id(user_id)
    now = now or utcnow()
    return [e for e in _replay(session, user_id, end, now) if start is None or e.occurred_at >= start]


def _replay(session: DbSession, user_id: int, end: datetime | None, now: datetime) -> Iterator[HistoryEntry]:
    steps: list[_Step] = []
    stored = select(MembershipEvent).where(MembershipEvent.user_id == user_id)
    changes = (select(RolloutChange, Segment.slug, Segment.salt)
               .join(Segment, Segment.id == RolloutChange.segment_id))
    pending = (select(Membership.segment_id, Segment.slug, Membership.expires_at)
               .join(Segment, Segment.id == Membership.segment_id)
               .where(Membership.user_id == user_id, Membership.expires_at <= now))
    if end is not None:
        stored = stored.where(MembershipEvent.occurred_at < end)
        changes = changes.where(RolloutChange.changed_at < end)
        pending = pending.where(Membership.expires_at < end)
    for stored_event in session.scalars(stored.order_by(MembershipEvent.occurred_at, MembershipEvent.id)):
        steps.append(_Step(stored_event.occurred_at, 1, stored_event.id, "event", stored_event))
    # Memberships past their expiry that the nightly purge has not removed yet.
    for segment_id, slug, expires_at in session.execute(pending):  # expires_at <= now: never NULL here
        fake = MembershipEvent(user_id=user_id, segment_id=segment_id, segment_slug=slug,
                               action=Action.REMOVED, reason=Reason.TTL, occurred_at=expires_at, actor="system")
        steps.append(_Step(fake.occurred_at, 1, 2**62, "event", fake))
    for change, slug, salt in session.execute(changes.order_by(RolloutChange.changed_at, RolloutChange.id)):
        steps.append(_Step(change.changed_at, 0, change.id, "rollout", (change, slug, salt)))
    steps.sort()

    states: dict[int, _State] = {}
    for step in steps:
        if step.kind == "event":
            event: MembershipEvent = step.payload
            state = states.setdefault(event.segment_id, _State())
            yield HistoryEntry(user_id, event.segment_slug, Action(event.action), event.occurred_at,
                               Reason(event.reason), event.actor)
            state.reported = event.action == Action.ADDED
            if event.action == Action.ADDED:
                state.explicit, state.excluded = True, False
            else:
                state.explicit = False
                if event.reason in (Reason.API, Reason.DASHBOARD) and state.rollout_in:
                    state.excluded = True
            slug, reason = event.segment_slug, Reason.ROLLOUT
        else:
            change, slug, salt = step.payload
            state = states.setdefault(change.segment_id, _State())
            state.rollout_in = rollout.in_rollout(salt, user_id, change.to_bp)
            if change.reason == Reason.SEGMENT_DELETED:
                state.excluded = False
            reason = Reason(change.reason)
        if state.effective != state.reported:
            state.reported = state.effective
            yield HistoryEntry(user_id, slug, Action.ADDED if state.effective else Action.REMOVED,
                               step.at, reason, "system")
