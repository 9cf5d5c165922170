"""How long a preview takes on a large known-user set (issue 24, item 1): 200,000 known users
(explicit members of three segments, some only in history), a group join previewed cold (user
hashes computed) and warm (hashes kept by the process). Prints the times; fails above 1.5 s warm."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from webapp.services import impact
from webapp.services.segments import lifecycle as segments

USERS = 200_000
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.slow
def test_a_preview_over_200000_known_users(db_session):
    segments.create_segment(db_session, "BIG_A", rollout_percent=10, now=T0)
    segments.create_segment(db_session, "BIG_B", rollout_percent=20, exclusion_group="BIGGROUP", now=T0)
    segments.create_segment(db_session, "BIG_C", rollout_percent=5, now=T0)
    ids = {s.slug: s.id for s in segments.list_segments(db_session, "BIG_")[0]}
    db_session.execute(
        text(
            "INSERT INTO memberships (user_id, segment_id, added_at) "
            "SELECT u, CASE u % 3 WHEN 0 THEN :a WHEN 1 THEN :b ELSE :c END, :t "
            "FROM generate_series(1, :n) u WHERE u % 10 <> 0"
        ),
        {"a": ids["BIG_A"], "b": ids["BIG_B"], "c": ids["BIG_C"], "t": T0, "n": USERS},
    )
    db_session.execute(  # a tenth of the users are known from history only
        text(
            "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
            "SELECT u, :a, 'BIG_A', 'removed', 'api', :t, '' FROM generate_series(10, :n, 10) u"
        ),
        {"a": ids["BIG_A"], "t": T0 + timedelta(seconds=1), "n": USERS},
    )
    db_session.execute(text("ANALYZE memberships"))
    impact._hash_ids = impact._hash_ids[:0]  # cold: no user hash kept
    impact._hash_values = impact._hash_values[:0]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        preview = impact.preview_update(db_session, "BIG_A", exclusion_group="BIGGROUP")
        times.append(time.perf_counter() - started)
    assert preview.known_users == USERS
    assert preview.own.leaving > 0 and preview.own.joining > 0
    rollout_times = []
    for percent in (15, 25, 35):
        started = time.perf_counter()
        impact.preview_update(db_session, "BIG_A", rollout_percent=percent)
        rollout_times.append(time.perf_counter() - started)
    print(
        f"\n200,000 known users: group join cold {times[0]:.3f} s, warm {min(times[1:]):.3f} s; "
        f"rollout change warm {min(rollout_times):.3f} s; "
        f"{preview.own.leaving:,} leave, {preview.own.joining:,} join"
    )
    assert max(times[1:] + rollout_times) < 1.5
