"""History is exact: random traffic checked against the oracle (tests/support/oracle.py).

Five seeds x 400 operations over 40 users, each seed sequential (every read taken during the
run is checked against the history at that moment), then one run of concurrent writers. For
every user: single read == batch lookup == history replay == per-user CSV report == the seed's
/download rows, and no doubled entry. A failure prints the seed and the operation log."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.support import oracle
from webapp.jobs import tasks

SEEDS = [int(s) for s in os.environ.get("ORACLE_SEEDS", "1,2,3,4,5").split(",")]
OPERATIONS = int(os.environ.get("ORACLE_OPERATIONS", "400"))


def _transport(app) -> oracle.Call:
    client = app.test_client()

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = client.open(path, method=method, json=body)
        return response.status_code, response.get_json(silent=True) if response.is_json else response.data

    return call


def _checkers(app, call: oracle.Call, since: str):
    def generated(request: tuple[str, str, dict | None], id_key: str, download: str) -> str:
        """Ask for a report, run its job here (the real job function), download its file."""
        status, body = call(*request)
        assert status in (200, 202), body
        with app.app_context():
            tasks.generate_report(body[id_key])
        status, data = call("GET", download.format(body[id_key]))
        assert status == 200, data
        return data.decode()

    def report_csv(user_id: int) -> list[tuple]:
        body = {
            "kind": "user_history",
            "user_id": user_id,
            "from": "2000-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
        }
        return oracle.csv_history(
            generated(("POST", "/api/v1/reports", body), "id", "/api/v1/reports/{}.csv")
        )

    def seed_rows(user_id: int) -> list[tuple]:
        request = ("GET", f"/report?date={since}&user_id={user_id}", None)
        return oracle.seed_history(generated(request, "task_id", "/download?id={}"))

    return report_csv, seed_rows


def _jobs(app):
    def run(name: str) -> None:
        with app.app_context():
            getattr(tasks, name)()

    return run


def _verify(app, run: oracle.Oracle) -> None:
    time.sleep(oracle.SETTLE)
    since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - 86400))
    report_csv, seed_rows = _checkers(app, run.call, since)
    problems = run.check(report_csv=report_csv, seed_rows=seed_rows)
    assert not problems, run.failure(problems)


@pytest.mark.parametrize("seed", SEEDS)
def test_history_is_exactly_what_reads_said(redis_app, committed_db, seed):
    run = oracle.Oracle(_transport(redis_app), seed, run_job=_jobs(redis_app))
    run.setup()
    run.run(OPERATIONS)
    _verify(redis_app, run)


def test_history_is_exact_under_concurrent_writers(redis_app, committed_db):
    run = oracle.Oracle(_transport(redis_app), 99, run_job=_jobs(redis_app))
    run.setup()
    run.run(OPERATIONS, threads=6)
    _verify(redis_app, run)
