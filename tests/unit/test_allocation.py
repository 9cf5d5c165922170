"""Exclusion-group bucket allocation: no two segments share a bucket; raising keeps earlier
buckets, lowering drops the latest ones."""

import random

import pytest

from webapp.services.rollout.allocation import NoRoom, RolloutState, change, free_ranges, replay, resize


def covered(ranges):
    return {b for start, end in ranges for b in range(start, end)}


def test_grow_takes_lowest_free_and_shrink_gives_back_latest():
    assert resize((), [((0, 1000),)], 500, "G") == ((1000, 1500),)
    grown = resize(((1000, 1500),), [((0, 1000),), ((1500, 2000),)], 1000, "G")
    assert grown == ((1000, 1500), (2000, 2500))
    assert resize(grown, [], 700, "G") == ((1000, 1500), (2000, 2200))
    assert resize(grown, [], 300, "G") == ((1000, 1300),)
    assert free_ranges([((0, 10), (20, 30))]) == [(10, 20), (30, 10_000)]


def test_no_room_names_the_group_and_clamp_takes_what_is_left():
    with pytest.raises(NoRoom) as caught:
        resize((), [((0, 9000),)], 2000, "DISCOUNTS")
    assert caught.value.group == "DISCOUNTS" and caught.value.available == 1000
    assert resize((), [((0, 9000),)], 2000, "DISCOUNTS", clamp=True) == ((9000, 10_000),)


def test_random_changes_keep_groups_disjoint_and_monotone():
    rng = random.Random(7)
    states = {sid: RolloutState(0, "G") for sid in range(1, 6)}
    for _ in range(2000):
        sid = rng.randrange(1, 6)
        target = rng.randrange(0, 10_001)
        before = covered(states[sid].ranges)
        try:
            after_state = change(states, sid, target)
        except NoRoom:
            used = sum(s.basis_points for k, s in states.items() if k != sid)
            assert target > 10_000 - used
            continue
        after = covered(after_state.ranges)
        assert len(after) == target == after_state.basis_points
        assert (
            before <= after or after <= before
        )  # raising keeps every earlier bucket, lowering keeps a subset
        if target < len(before):  # lowering gives back the most recently taken buckets
            order = [b for start, end in states[sid].ranges for b in range(start, end)]
            assert after == set(order[:target])
        states[sid] = after_state
        sets = [covered(s.ranges) for s in states.values()]
        assert sum(map(len, sets)) == len(set().union(*sets))  # disjoint


def test_moving_out_of_a_group_frees_its_buckets_and_replay_clamps():
    states = {1: RolloutState(6000, "G", ((0, 6000),)), 2: RolloutState(0, "G")}
    assert change(states, 1, 6000, group=None) == RolloutState(6000)
    assert replay(states, [(2, 7000)])[2].basis_points == 4000  # only 40% was left
