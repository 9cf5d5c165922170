"""Exclusion groups as PMs see them: how a group's 100% is shared among its segments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from webapp.errors import NotFound, detail
from webapp.models import ExclusionGroup, Segment
from webapp.rules import is_slug
from webapp.services.common import DbSession, utcnow
from webapp.services.rollout import buckets as rollout
from webapp.services.segments.rollout_state import materialize, state_of


@dataclass(frozen=True)
class GroupShare:
    slug: str
    basis_points: int
    ranges: rollout.Ranges


@dataclass(frozen=True)
class GroupView:
    name: str
    shares: list[GroupShare]  # live segments, largest share first

    @property
    def used_basis_points(self) -> int:
        return sum(s.basis_points for s in self.shares)


def list_groups(session: DbSession, now: datetime | None = None) -> list[GroupView]:
    """Every group with live segments (or created and still empty), by name."""
    materialize(session, now or utcnow())
    names = session.scalars(select(ExclusionGroup.name).order_by(ExclusionGroup.name)).all()
    members = session.scalars(
        select(Segment).where(Segment.is_live, Segment.exclusion_group.is_not(None)).order_by(Segment.slug)
    ).all()
    return [_view(name, [s for s in members if s.exclusion_group == name]) for name in names]


def get_group(session: DbSession, name: str, now: datetime | None = None) -> GroupView:
    materialize(session, now or utcnow())
    if not is_slug(name) or session.get(ExclusionGroup, name) is None:
        raise NotFound(
            f"exclusion group {name} does not exist",
            [detail("name", "no such exclusion group", code="unknown_group", value=name[:80])],
        )
    members = session.scalars(select(Segment).where(Segment.is_live, Segment.exclusion_group == name)).all()
    return _view(name, list(members))


def _view(name: str, members: list[Segment]) -> GroupView:
    shares = [GroupShare(s.slug, s.rollout_basis_points, state_of(s).ranges) for s in members]
    return GroupView(name, sorted(shares, key=lambda share: (-share.basis_points, share.slug)))
