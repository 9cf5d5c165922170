"""The membership rule: which segments a user is in, and which history entries a change implies.

Pure functions, no database: the specification every other path is held to. The single read
(``read_path._evaluate_one``) and the history replay (``history``) call :func:`members`; the
fast paths — the NumPy batch evaluation (``read_path._evaluate``) and the set-based SQL writers
(``membership_store``), which decide which history rows to store — are proven equal to it by
property tests (``tests/services/test_membership_rule.py``). :data:`MATCH_VISIBLE` is the rule
in SQL for one rule match row (a text, no database access here), shared by that row's writer and
the member export.

The rule, for one user at one moment:

1. An explicit membership counts until its expiry (exclusive), whatever else holds.
2. A rollout exclusion (the user was explicitly removed while the rollout covered them)
   overrides the rollout, never an explicit membership.
3. Inside an exclusion group, an explicit membership of one segment holds the group: the
   group's other rollouts do not count for that user. (Writes refuse a second explicit segment
   of one group; should two writers ever race, the first by slug rank wins.)
4. Otherwise the user is in a segment that covers them now: for a plain segment, its rollout
   covers their bucket (scheduled changes counting from their ``at``); for a segment in rule
   mode (issue 29), its rules matched the user's traits with their bucket in its rollout at the
   last evaluation — the user's own ``rule_matches`` row, recorded in history as ``rule`` rows
   (``match`` changes here).

History entries are the changes of that answer, nothing else: :func:`step` applies the changes
of one instant and returns the (segment, added/removed) pairs whose membership flipped. An
explicit add of a user already in through the rollout, or a removal of a user not in, flips
nothing and so writes no visible entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from webapp.models.enums import Action
from webapp.models.segment import LIVE_SEGMENT_SQL


def members(
    explicit: Iterable[int],
    excluded: Iterable[int] | set[int],
    covered: Iterable[int],
    group_of: Mapping[int, str],
    rank: Callable[[int], Any] | None = None,
) -> list[int]:
    """The segment ids the user is in: ``explicit`` live memberships (in slug-rank order when
    ``rank`` is given), ``excluded`` rollout exclusions, ``covered`` segments whose rollout
    covers the user now; ``group_of`` maps a grouped segment to its group. Explicit first (in
    the order given), then rollouts (in the order given)."""
    mine = sorted(explicit, key=rank) if rank is not None else list(explicit)
    overridden = set(excluded)
    overridden.update(mine)
    if not group_of:  # (the hot read's common case: no group, nothing to hold)
        return mine + [sid for sid in covered if sid not in overridden]
    found: list[int] = []
    held: set[str] = set()
    for sid in mine:
        group = group_of.get(sid)
        if group is not None:
            if group in held:
                continue
            held.add(group)
        found.append(sid)
    if not held:
        return found + [sid for sid in covered if sid not in overridden]
    return found + [sid for sid in covered if sid not in overridden and group_of.get(sid) not in held]


@dataclass(frozen=True)
class Segment:
    """What one segment is for the user at a moment: the catalog's side (``covered``, its
    ``group``, whether it is ``live``) and the user's own rows (``explicit``, ``excluded``)."""

    slug: str = ""
    covered: bool = False
    group: str | None = None
    live: bool = True
    explicit: bool = False
    excluded: bool = False
    rule_mode: bool = False  # the segment covers by its rule matches (``matched``), not ``covered``
    matched: bool = False  # the user's rule match row (materialised: rules match, bucket in rollout)

    @property
    def covers(self) -> bool:
        """Does the segment cover the user (explicit rows notwithstanding)?"""
        return self.matched if self.rule_mode else self.covered


@dataclass(frozen=True)
class State:
    """One user's view of every segment they ever touched, by segment id."""

    segments: Mapping[int, Segment] = field(default_factory=dict)

    def members(self) -> set[int]:
        live = {sid: s for sid, s in self.segments.items() if s.live}
        return set(
            members(
                (sid for sid, s in live.items() if s.explicit),
                {sid for sid, s in live.items() if s.excluded},
                (sid for sid, s in live.items() if s.covers),
                {sid: s.group for sid, s in live.items() if s.group is not None},
                rank=lambda sid: (live[sid].slug, sid),
            )
        )


@dataclass(frozen=True)
class Change:
    """One change of one segment for the user.

    ``kind``: ``add`` (explicit membership; lifts an exclusion), ``remove`` (explicit
    membership ends; ``exclude`` when the segment covers the user, as api/dashboard/bulk
    removals do), ``expire`` (an explicit membership reaches its expiry, or is removed with the
    segment), ``rollout`` (the catalog's side: ``covered``, ``group``, ``live``, ``rule_mode``),
    ``match`` (the user's rule match row written, ``covered`` true, or deleted)."""

    segment_id: int
    kind: str
    slug: str = ""
    exclude: bool = False
    covered: bool = False
    group: str | None = None
    live: bool = True
    rule_mode: bool = False


def apply(state: State, change: Change) -> State:
    """``state`` after ``change`` (no history: see :func:`step`)."""
    old = state.segments.get(change.segment_id, Segment(slug=change.slug))
    slug = change.slug or old.slug
    if change.kind == "add":
        new = replace(old, slug=slug, explicit=True, excluded=False)
    elif change.kind == "remove":
        new = replace(
            old, slug=slug, explicit=False, excluded=old.excluded or (change.exclude and old.covers)
        )
    elif change.kind == "expire":
        new = replace(old, slug=slug, explicit=False)
    elif change.kind == "rollout":
        new = replace(
            old,
            slug=slug,
            covered=change.covered,
            group=change.group,
            live=change.live,
            rule_mode=change.rule_mode,
            # A deletion keeps the segment's exclusions for a restore (the rows stay; reads
            # ignore segments outside the catalog), so they hold again when it comes back.
            excluded=old.excluded,
        )
    elif change.kind == "match":
        new = replace(old, slug=slug, matched=change.covered)
    else:
        raise ValueError(f"unknown change kind {change.kind!r}")
    return State({**state.segments, change.segment_id: new})


def step(state: State, changes: Iterable[Change]) -> tuple[State, list[tuple[int, Action]]]:
    """Apply the changes of one instant (all visible to readers at once); returns the new state
    and the flips of membership they imply, by segment id: the history entries of that instant."""
    before = state.members()
    for change in changes:
        state = apply(state, change)
    after = state.members()
    flips = [(sid, Action.ADDED) for sid in sorted(after - before)]
    flips += [(sid, Action.REMOVED) for sid in sorted(before - after)]
    return state, flips


# The rule in SQL for one rule match row (issue 29): does the row of (c.user_id, c.segment_id)
# make the user a member at c.at, given segment ``s`` (its segments row)? Only for a live segment
# in rule mode (a pending one's rows are not read yet), and only when nothing overrides its
# coverage: a live explicit row of the segment, an exclusion from it, or (in an exclusion group)
# a live explicit row of any segment of the group (explicit beats exclusion beats coverage; an
# explicit member holds the group). Used by the writer of rule rows (``membership.store``:
# whether a row written or deleted moves an answer, its history row's ``visible``) and by the
# member export (``history.reports``: which of a segment's rule rows are members now); the
# property tests hold it to :func:`members` through those writers.
MATCH_VISIBLE = f"""(s.rule_mode AND s.{LIVE_SEGMENT_SQL}
 AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = c.user_id AND m.segment_id = c.segment_id
                 AND (m.expires_at IS NULL OR m.expires_at > c.at))
 AND NOT EXISTS (SELECT 1 FROM rollout_exclusions e WHERE e.user_id = c.user_id AND e.segment_id = c.segment_id)
 AND (s.exclusion_group IS NULL OR NOT EXISTS (
     SELECT 1 FROM memberships m JOIN segments o ON o.id = m.segment_id
     WHERE m.user_id = c.user_id AND o.exclusion_group = s.exclusion_group AND o.{LIVE_SEGMENT_SQL}
       AND (m.expires_at IS NULL OR m.expires_at > c.at))))"""
