"""Reach and member counts at 500,000 memberships: cold (computed) vs cached (Redis).

Prints the numbers docs/performance.md quotes (run with ``-s``); asserts only that the cache
helps and that the answers agree."""

from __future__ import annotations

import statistics
import time

import sqlalchemy as sa

from devstack.bulk_load import copy_memberships
from webapp.platform.extensions import db
from webapp.platform.redis_client import redis_client
from webapp.services.reads import reach
from webapp.services.segments import lifecycle as segment_service

USERS = 250_000  # x 2 segments = 500,000 memberships, 250,000 known users
SSO = {"X-Forwarded-Email": "bench@example.com"}


def timed(call, runs: int = 5) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, result


def clear_cache(app) -> None:
    """Drop the reach cache's entries (its keys under CACHE_KEY_PREFIX)."""
    client = redis_client(app)
    if keys := client.keys(app.config["CACHE_KEY_PREFIX"] + "*"):
        client.delete(*keys)


def test_reach_and_counts_cold_vs_cached(redis_app, committed_db, capsys):
    app = redis_app
    client = app.test_client()
    for slug, body in (
        ("BENCH_A", {}),
        ("BENCH_B", {}),
        ("ROLL_10", {"rollout_percent": 10}),
        ("ROLL_G1", {"rollout_percent": 30, "exclusion_group": "BENCHG"}),
        ("ROLL_G2", {"rollout_percent": 20, "exclusion_group": "BENCHG"}),
    ):
        assert client.post("/api/v1/segments", json={"slug": slug, **body}).status_code == 201
    load = copy_memberships(db.engine, "BENCH_", 1, USERS)
    with app.app_context():
        ids = db.session.scalars(sa.text("SELECT id FROM segments ORDER BY id")).all()

        def cold_counts():
            return segment_service.member_counts(db.session, list(ids))

        def cold_coverage():
            return reach.compute_coverage(db.session)

        counts_cold, counts = timed(cold_counts)
        clear_cache(app)
        reach.member_counts(db.session, list(ids))  # fill
        counts_cached, cached_counts = timed(lambda: reach.member_counts(db.session, list(ids)))
        assert cached_counts == counts
        coverage_cold, coverage = timed(cold_coverage, runs=3)
        clear_cache(app)
        reach.rollout_reach(db.session)  # fill
        coverage_cached, cached_coverage = timed(lambda: reach.rollout_reach(db.session))
        assert cached_coverage == coverage and coverage["known"] == USERS
        db.session.remove()

    def page():
        response = client.get("/", headers=SSO)
        assert response.status_code == 200
        return response

    def page_cold():
        clear_cache(app)
        return page()

    with app.app_context():
        page_uncached, _ = timed(page_cold, runs=3)
    page()
    page_cached, _ = timed(page, runs=5)
    lines = [
        f"load: COPY {2 * USERS:,} memberships: {load:.1f} s",
        f"member_counts (5 segments): cold {counts_cold:.1f} ms, cached {counts_cached:.1f} ms",
        f"known users + coverage (3 rollouts, {USERS:,} known): cold {coverage_cold:.0f} ms, "
        f"cached {coverage_cached:.1f} ms",
        f"GET / (segments list): cold {page_uncached:.0f} ms, cached {page_cached:.1f} ms",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert counts_cached < counts_cold and coverage_cached < coverage_cold and page_cached < page_uncached
