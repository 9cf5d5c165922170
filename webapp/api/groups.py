"""/api/v1/groups: exclusion groups and how their 100% is shared."""

from __future__ import annotations

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import out
from webapp.api.schemas import GroupList, GroupOut, GroupSegmentOut
from webapp.platform.extensions import db
from webapp.services.segments import groups

TAGS = ("groups",)


def group_out(view: groups.GroupView) -> GroupOut:
    return GroupOut(
        name=view.name,
        used_percent=view.used_basis_points / 100,
        free_percent=(10_000 - view.used_basis_points) / 100,
        segments=[
            GroupSegmentOut(
                slug=s.slug, rollout_percent=s.basis_points / 100, buckets=[list(r) for r in s.ranges]
            )
            for s in view.shares
        ],
    )


@bp.get("/groups")
@operation(tags=TAGS, ok=(200, GroupList))
def list_groups():
    """Every exclusion group with its segments' shares."""
    return out(GroupList(items=[group_out(v) for v in groups.list_groups(db.session)]))


@bp.get("/groups/<name>")
@operation(tags=TAGS, ok=(200, GroupOut))
def get_group(name: str):
    """One exclusion group: which share of its hash space each segment owns (no user is ever
    in two of its segments)."""
    return out(group_out(groups.get_group(db.session, name)))
