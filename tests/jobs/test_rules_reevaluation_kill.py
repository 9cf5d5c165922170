"""A re-evaluation whose work-horse is killed with SIGKILL mid-way resumes (RQ's retry, or the
reaper) to exactly the newest rules' matches, each row's history recorded once (issue 29)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.checks import scalar
from tests.support.processes import (
    flask_worker,
    kill_horse_at,
    operation_finished,
    shorten_retries,
)
from webapp.platform.extensions import db

USERS = 200_000
pytestmark = [pytest.mark.fault, pytest.mark.slow]


def test_a_reevaluation_killed_mid_way_resumes_to_exactly_the_newest_rules(jobs_app, tmp_path):
    app = jobs_app
    with app.app_context(), db.engine.begin() as conn:  # even users RU, odd US
        conn.execute(
            sa.text(
                "INSERT INTO user_traits (user_id, traits, updated_at) SELECT u, "
                "jsonb_build_object('country', CASE WHEN u % 2 = 0 THEN 'RU' ELSE 'US' END), now() "
                "FROM generate_series(1, :n) u"
            ),
            {"n": USERS},
        )
    client = app.test_client()
    rules = [{"conditions": [{"trait": "country", "operator": "str_eq", "value": "RU"}]}]
    created = client.post("/api/v1/segments", json={"slug": "KILLED_RULES", "rules": rules})
    assert created.status_code == 201, created.json
    operation_id = created.json["reevaluation"]["id"]
    shorten_retries(app)
    log = tmp_path / "worker.log"
    with flask_worker(app, log) as worker:
        killed = kill_horse_at(app, worker, operation_id, log, lambda row: row["done"] >= 60_000)
        assert killed["status"] != "finished", killed
        row = operation_finished(app, operation_id, log)
    print(
        f"\nkilled at cursor {killed['cursor']} ({killed['done']} done); finished after {row['attempts']} attempts"
    )
    assert row["attempts"] >= 2 and row["error"] is None
    assert (row["added"], row["removed"]) == (USERS // 2, 0)
    # exactly the users the rules match, each added once in history
    assert scalar(app, "SELECT count(*) FROM rule_matches") == USERS // 2
    assert scalar(app, "SELECT count(*) FROM rule_matches WHERE user_id % 2 = 1") == 0
    total, users = (
        scalar(
            app,
            f"SELECT {what} FROM membership_events WHERE segment_slug = 'KILLED_RULES' AND reason = 'rule'",
        )
        for what in ("count(*)", "count(DISTINCT user_id)")
    )
    assert total == users == USERS // 2
    for user in (2, 3, USERS):  # the reads say so
        answer = client.get(f"/api/v1/users/{user}/segments").json["segments"]
        assert [s["slug"] for s in answer] == (["KILLED_RULES"] if user % 2 == 0 else [])
