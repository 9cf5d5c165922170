"""A trait import whose work-horse is killed with SIGKILL mid-import resumes (RQ's retry, or the
reaper) to exactly the file: every user's traits as their line says, each change recorded once
(one ``set`` row per user), the staged lines dropped. (The approach of
tests/api/test_bulk_replace_load.py's kill test.)"""

from __future__ import annotations

import json

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

pytestmark = [pytest.mark.fault, pytest.mark.slow]
USERS = 60_000


def test_an_import_killed_twice_resumes_to_exactly_the_file(jobs_app, tmp_path):
    app = jobs_app
    client = app.test_client()
    lines = {u: {"plan": ("paid", "free")[u % 2], "n": u, "beta": u % 5 == 0} for u in range(1, USERS + 1)}
    body = "".join(json.dumps({"user_id": u, "traits": t}) + "\n" for u, t in lines.items())
    accepted = client.post(
        "/api/v1/users/traits:import?mode=replace", data=body, content_type="application/x-ndjson"
    )
    assert accepted.status_code == 202, accepted.json
    operation_id = accepted.json["id"]
    shorten_retries(app)
    log = tmp_path / "worker.log"
    killed = []
    with flask_worker(app, log) as worker:
        for at in (10_000, 35_000):
            killed.append(kill_horse_at(app, worker, operation_id, log, lambda row, at=at: row["done"] >= at))
        state = operation_finished(app, operation_id, log)
    print(f"\nkilled at done={[k['done'] for k in killed]}; finished after {state['attempts']} attempts")
    assert all(0 < k["done"] < USERS for k in killed) and state["attempts"] >= 3
    assert (state["done"], state["added"], state["updated"]) == (USERS, USERS, 0)
    with app.app_context(), db.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT user_id, traits FROM user_traits")).all())
    assert stored == lines
    assert scalar(app, "SELECT count(*) FROM trait_events") == USERS
    assert scalar(app, "SELECT count(DISTINCT user_id) FROM trait_events WHERE action = 'set'") == USERS
    assert scalar(app, "SELECT count(*) FROM bulk_operation_ids") == 0
