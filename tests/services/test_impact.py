"""Impact before change (issue 24, item 1): the preview's numbers are the history's.

For random segments, groups, percentages, explicit members, exclusions and expired rows, each
kind of change is previewed (services.impact), made at the same instant, and every known user's
history (history.user_history, the replay) is read back: the ``added`` / ``removed`` entries
stamped at the change's instant, per segment, must be exactly the preview's joining / leaving.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.moves import history_moves, known_users, preview_moves
from webapp.errors import AppError, Conflict
from webapp.models.enums import Action
from webapp.services import impact
from webapp.services.history import replay as history
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments
from webapp.services.segments import schedules

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CHANGE = T0 + timedelta(hours=5)
USERS = 260
KINDS = ("join", "leave", "percent", "delete", "remove", "replace", "move")


def build(session, rng: random.Random) -> list[str]:
    """Random segments (some in groups G1/G2), explicit members, TTLs that ran out, exclusions."""
    slugs = [f"S{i}" for i in range(rng.randint(2, 5))]
    at = T0
    for slug in slugs:
        group = rng.choice([None, None, "G1", "G1", "G2"])
        percent = rng.choice([0, 5, 10, 20, 30, 45])
        at += timedelta(seconds=1)
        try:
            with session.begin_nested():
                segments.create_segment(session, slug, rollout_percent=percent, exclusion_group=group, now=at)
        except AppError:
            segments.create_segment(session, slug, rollout_percent=0, exclusion_group=None, now=at)
    for slug in slugs:
        at += timedelta(seconds=1)
        ids = rng.sample(range(1, USERS + 1), rng.randint(5, 60))
        try:
            with session.begin_nested():
                bulk.bulk_add(session, slug, ids, now=at)
        except Conflict:
            pass
        if rng.random() < 0.5:  # some explicit rows whose TTL runs out before the change
            at += timedelta(seconds=1)
            try:
                with session.begin_nested():
                    until = at + timedelta(hours=1)
                    bulk.bulk_add(
                        session, slug, rng.sample(range(1, USERS + 1), 10), expires_at=until, now=at
                    )
            except Conflict:
                pass
        if rng.random() < 0.6:  # removals: exclusions from the rollout
            at += timedelta(seconds=1)
            bulk.bulk_remove(session, slug, rng.sample(range(1, USERS + 1), rng.randint(3, 40)), now=at)
    return slugs


def change(session, rng: random.Random, slugs: list[str], kind: str):
    """A random change of ``kind``: (its preview, the change made at CHANGE), both to call."""
    slug = rng.choice(slugs)
    percent = rng.choice([0, 5, 10, 25, 40, 60])
    ids = rng.sample(range(1, USERS + 40), rng.randint(1, 80))  # some never seen before
    if kind == "join":
        group = rng.choice(["G1", "G2", "G3"])
        return lambda: impact.preview_update(
            session, slug, exclusion_group=group, now=CHANGE
        ), lambda: segments.update_segment(session, slug, exclusion_group=group, now=CHANGE)
    if kind == "leave":
        return lambda: impact.preview_update(
            session, slug, exclusion_group=None, now=CHANGE
        ), lambda: segments.update_segment(session, slug, exclusion_group=None, now=CHANGE)
    if kind == "percent":
        return lambda: impact.preview_update(
            session, slug, rollout_percent=percent, now=CHANGE
        ), lambda: segments.update_segment(session, slug, rollout_percent=percent, now=CHANGE)
    if kind == "move":  # percentage and group at once
        group = rng.choice(["G1", "G2", None])
        return lambda: impact.preview_update(
            session, slug, rollout_percent=percent, exclusion_group=group, now=CHANGE
        ), lambda: segments.update_segment(
            session, slug, rollout_percent=percent, exclusion_group=group, now=CHANGE
        )
    if kind == "delete":
        return lambda: impact.preview_delete(session, slug, now=CHANGE), lambda: bulk.delete_segment(
            session, slug, now=CHANGE
        )
    if kind == "remove":
        return lambda: impact.preview_remove(session, slug, ids, now=CHANGE), lambda: bulk.bulk_remove(
            session, slug, ids, now=CHANGE
        )
    assert kind == "replace"
    return lambda: impact.preview_replace(session, slug, ids, now=CHANGE), lambda: bulk.bulk_replace(
        session, slug, ids, now=CHANGE
    )


@pytest.mark.parametrize("seed", range(35))
def test_the_preview_is_what_history_then_records(db_session, seed):
    rng = random.Random(seed)
    slugs = build(db_session, rng)
    kind = KINDS[seed % len(KINDS)]
    ask, make = change(db_session, rng, slugs, kind)
    try:
        preview = ask()
    except AppError as refused:  # a preview refused: the change is refused alike
        with pytest.raises(type(refused)) as also:
            make()
        assert [d["code"] for d in also.value.details[:1]] == [d["code"] for d in refused.details[:1]]
        return
    users = set(known_users(db_session))
    assert preview.known_users == len(users) or kind in ("remove", "replace")
    make()
    users |= set(known_users(db_session))
    assert history_moves(db_session, sorted(users), CHANGE) == preview_moves(preview), (seed, kind)


def test_a_group_join_moves_exactly_what_was_shown(db_session):
    """The issue's case, with the group holding another segment with members: a segment at 10%
    joins DISCOUNTS (another segment at 20% with explicit members): who leaves and joins it, and
    the other segment's members it now holds, are what history then shows."""
    segments.create_segment(db_session, "JOINER", rollout_percent=10, now=T0)
    segments.create_segment(db_session, "OTHER", rollout_percent=20, exclusion_group="DISCOUNTS", now=T0)
    bulk.bulk_add(db_session, "JOINER", list(range(1, 1501, 7)), now=T0 + timedelta(seconds=1))
    others = [u for u in range(3, 1501, 11) if u % 7 != 1]  # none of them an explicit member of JOINER
    bulk.bulk_add(db_session, "OTHER", others, now=T0 + timedelta(seconds=2))
    bulk.bulk_remove(db_session, "OTHER", list(range(1, 1501, 5)), now=T0 + timedelta(seconds=3))
    bulk.bulk_remove(db_session, "JOINER", list(range(2, 1501, 13)), now=T0 + timedelta(seconds=3))
    preview = impact.preview_update(db_session, "JOINER", exclusion_group="DISCOUNTS", now=CHANGE)
    assert preview.own.leaving > 0 and preview.own.joining > 0
    assert [m.slug for m in preview.moves][0] == "JOINER"
    segments.update_segment(db_session, "JOINER", exclusion_group="DISCOUNTS", now=CHANGE)
    moves = history_moves(db_session, known_users(db_session), CHANGE)
    assert moves == preview_moves(preview)
    assert "OTHER" in moves  # JOINER's explicit members hold the group: they leave OTHER's rollout


def test_a_scheduled_step_is_counted_today(db_session):
    """A step is counted on today's users and rows, after the steps before it: with nothing
    else changing, history at its time shows those numbers."""
    now = datetime.now(UTC).replace(microsecond=0)
    segments.create_segment(db_session, "STEPS", rollout_percent=30, now=now - timedelta(hours=1))
    bulk.bulk_add(db_session, "STEPS", list(range(1, 800, 3)), now=now - timedelta(minutes=50))
    bulk.bulk_remove(db_session, "STEPS", list(range(1, 800, 2)), now=now - timedelta(minutes=40))
    first, second = now + timedelta(seconds=2), now + timedelta(seconds=3)
    schedules.add(db_session, "STEPS", first, 50, "pm", now=now)
    preview = impact.preview_schedule(db_session, "STEPS", second, 10, now=now)
    schedules.add(db_session, "STEPS", second, 10, "pm", now=now)
    users = known_users(db_session)
    later = second + timedelta(seconds=1)
    counts: Counter[Action] = Counter()
    for user in users:
        for entry in history.user_history(db_session, user, start=second, end=later, now=later):
            counts[entry.operation] += 1
    assert (counts[Action.REMOVED], counts[Action.ADDED]) == (preview.own.leaving, preview.own.joining)
    assert preview.own.leaving > 0


def test_a_change_against_a_newer_catalog_is_refused(db_session):
    segments.create_segment(db_session, "VERSIONED", rollout_percent=10, now=T0)
    bulk.bulk_add(db_session, "VERSIONED", [1, 2, 3], now=T0)
    preview = impact.preview_update(db_session, "VERSIONED", rollout_percent=5, now=CHANGE)
    segments.create_segment(db_session, "ELSEWHERE", rollout_percent=1, now=T0)  # the catalog moves on
    with pytest.raises(Conflict) as refused:
        segments.update_segment(
            db_session, "VERSIONED", rollout_percent=5, now=CHANGE, expected_version=preview.catalog_version
        )
    [item] = refused.value.details
    assert item["code"] == "impact_changed" and item["catalog_version"] > preview.catalog_version
    again = impact.preview_update(db_session, "VERSIONED", rollout_percent=5, now=CHANGE)
    segments.update_segment(
        db_session, "VERSIONED", rollout_percent=5, now=CHANGE, expected_version=again.catalog_version
    )
