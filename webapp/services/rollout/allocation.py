"""Rollout states and how a change moves them: pure functions shared by the write path, the
read path (scheduled changes that are due but not yet applied) and history replay, so all
three compute the same buckets.

Outside an exclusion group a rollout of N basis points covers buckets [0, N) of the
segment's own hash. In a group the segments share the group's hash space of 10,000 buckets,
each owning a list of ranges in allocation order: raising takes the lowest free buckets
(earlier members stay), lowering gives back the most recently taken ones (only the latest
members leave), so no bucket, hence no user, is ever in two of a group's rollouts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from webapp.services.rollout.buckets import BUCKETS, Ranges


@dataclass(frozen=True)
class RolloutState:
    basis_points: int
    group: str | None = None
    ranges: Ranges = ()  # in a group: the buckets owned, in allocation order


class NoRoom(Exception):
    """``available``: the group's free buckets; ``ceiling``: the most this segment can have
    (what it owns plus what is free), which is what a message to its owner must state."""

    def __init__(self, group: str, available: int, ceiling: int | None = None):
        super().__init__(f"exclusion group {group} has {available / 100:g}% left")
        self.group, self.available = group, available
        self.ceiling = available if ceiling is None else ceiling


def free_ranges(taken: Iterable[Ranges]) -> list[tuple[int, int]]:
    """The buckets no range in ``taken`` covers, ascending."""
    edges = sorted(pair for ranges in taken for pair in ranges)
    free, position = [], 0
    for start, end in edges:
        if start > position:
            free.append((position, start))
        position = max(position, end)
    if position < BUCKETS:
        free.append((position, BUCKETS))
    return free


def resize(own: Ranges, others: Iterable[Ranges], target: int, group: str, *, clamp: bool = False) -> Ranges:
    """``own`` grown (lowest free buckets first) or shrunk (latest buckets first) to ``target``
    buckets; NoRoom when the group lacks space, unless ``clamp`` (then as much as there is)."""
    current = sum(end - start for start, end in own)
    result = list(own)
    if target <= current:
        excess = current - target
        while excess:
            start, end = result.pop()
            if end - start > excess:
                result.append((start, end - excess))
                excess = 0
            else:
                excess -= end - start
        return tuple(result)
    free = free_ranges([own, *others])
    available = sum(end - start for start, end in free)
    needed = target - current
    if needed > available:
        if not clamp:
            raise NoRoom(group, available, current + available)
        needed = available
    for start, end in free:
        if not needed:
            break
        take = min(needed, end - start)
        if result and result[-1][1] == start:
            result[-1] = (result[-1][0], start + take)
        else:
            result.append((start, start + take))
        needed -= take
    return tuple(result)


def change(
    states: Mapping[int, RolloutState],
    segment_id: int,
    basis_points: int,
    *,
    group: str | None | object = ...,
    clamp: bool = False,
) -> RolloutState:
    """The segment's state after setting its rollout (and, when ``group`` is given, moving it
    into that group or, with None, out of any); ``states`` holds every live segment of the group."""
    state = states[segment_id]
    target_group = state.group if group is ... else group
    assert target_group is None or isinstance(target_group, str)
    if target_group is None:
        return RolloutState(basis_points)
    own = state.ranges if target_group == state.group else ()
    others = [s.ranges for sid, s in states.items() if sid != segment_id and s.group == target_group]
    ranges = resize(own, others, basis_points, target_group, clamp=clamp)
    return RolloutState(sum(e - s for s, e in ranges), target_group, ranges)


def replay(states: dict[int, RolloutState], steps: Iterable[tuple[int, int]]) -> dict[int, RolloutState]:
    """``states`` after (segment id, basis points) steps in order, clamped to the room a
    group has (the write path validated them; clamping only keeps a read well defined)."""
    states = dict(states)
    for segment_id, basis_points in steps:
        if segment_id in states:
            states[segment_id] = change(states, segment_id, basis_points, clamp=True)
    return states


def without(state: RolloutState) -> RolloutState:
    """A deleted segment's state: nothing covered, its group's buckets free again."""
    return replace(state, basis_points=0, ranges=())
