"""A trait import whose work-horse is killed with SIGKILL mid-import resumes (RQ's retry, or the
reaper) to exactly the file: every user's traits as their line says, each change recorded once
(one ``set`` row per user), the staged lines dropped. (The approach of
tests/api/test_bulk_replace_load.py's kill test.)"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.support.checks import operation_state, scalar
from tests.support.processes import (
    flask_worker,
    log_tail,
    rq_job_settled,
    run_reaper,
    shorten_retries,
    wait_for,
    work_horse,
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
            reached = wait_for(lambda at=at: operation_state(app, operation_id)["done"] >= at, 120, 0.005)
            assert reached, f"{operation_state(app, operation_id)}\n{log_tail(log)}"
            horse = work_horse(worker)
            os.kill(horse.pid, signal.SIGKILL)
            horse.wait(5)
            killed.append(operation_state(app, operation_id))
        deadline = time.monotonic() + 300
        while (state := operation_state(app, operation_id))["status"] != "finished":
            assert state["status"] != "failed" and time.monotonic() < deadline, f"{state}\n{log_tail(log)}"
            if rq_job_settled(app, operation_id):
                time.sleep(1)
                if (
                    rq_job_settled(app, operation_id)
                    and operation_state(app, operation_id)["status"] != "finished"
                ):
                    run_reaper(app)  # RQ gave up on it: the reaper queues it again
            time.sleep(0.2)
    print(f"\nkilled at done={[k['done'] for k in killed]}; finished after {state['attempts']} attempts")
    assert all(0 < k["done"] < USERS for k in killed) and state["attempts"] >= 3
    assert (state["done"], state["added"], state["updated"]) == (USERS, USERS, 0)
    with app.app_context(), db.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT user_id, traits FROM user_traits")).all())
    assert stored == lines
    assert scalar(app, "SELECT count(*) FROM trait_events") == USERS
    assert scalar(app, "SELECT count(DISTINCT user_id) FROM trait_events WHERE action = 'set'") == USERS
    assert scalar(app, "SELECT count(*) FROM bulk_operation_ids") == 0
