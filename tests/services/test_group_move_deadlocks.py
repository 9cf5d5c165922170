"""Segments moving between exclusion groups (new ones among them) while their rollouts change:
no deadlock for PostgreSQL to break.

``lock_scope`` reads a segment's group, locks the groups, then the segments; when the segment
moved meanwhile it used to lock the new group while holding the segment rows (against the lock
order: groups by name, then segments by id), and a writer of that group waiting for those rows
closed a cycle (PostgreSQL broke it after deadlock_timeout; the request retried, or answered 503
after three). Real threads and commits; the count is PostgreSQL's own (pg_stat_database)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.support.checks import deadlocks
from tests.support.threads import in_threads

pytestmark = pytest.mark.fault

SLUGS = [f"GM_{i}" for i in range(6)]
GROUPS = ["GM_A", "GM_B", "GM_C"]
WRITERS, SECONDS = 8, 4.0


def test_group_moves_and_rollout_changes_never_deadlock(app, committed_db):
    setup = app.test_client()
    for slug in SLUGS:
        assert setup.post("/api/v1/segments", json={"slug": slug, "rollout_percent": 5}).status_code == 201
    before = deadlocks(app)
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + SECONDS

    def writer(index: int) -> None:
        rng, client = random.Random(index), app.test_client()
        while time.monotonic() < deadline:
            slug = rng.choice(SLUGS)
            if rng.random() < 0.6:
                fresh = f"GM_N{int(time.monotonic() * 4)}"  # a group no one created yet, often
                body: dict = {"exclusion_group": rng.choice([*GROUPS, fresh, None])}
            else:
                body = {"rollout_percent": rng.choice((0, 5, 10))}
            statuses[client.patch(f"/api/v1/segments/{slug}", json=body).status_code] += 1

    in_threads(WRITERS, writer, timeout=60)
    broken = deadlocks(app) - before
    assert broken == 0, f"PostgreSQL broke {broken} deadlock(s); answers {dict(statuses)}"
    assert not any(s >= 500 for s in statuses), statuses
