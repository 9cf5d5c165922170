"""History is exact: random traffic checked against the oracle (tests/support/oracle.py).

Five seeds x 400 operations over 40 users (explicit changes, rollouts, groups, schedules, bulk
operations, deletions and restores, and since issue 29 users' traits written, rules given,
changed and removed, re-evaluations run), each seed sequential (every read taken during the
run is checked against the history at that moment), then one run of concurrent writers. For
every user: single read == batch lookup == history replay == per-user CSV report == the seed's
/download rows, and no doubled entry. A failure prints the seed and the operation log."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import oracle
from webapp.jobs import tasks
from webapp.models import BulkOperation, ExclusionGroup, Segment
from webapp.models.enums import OperationKind, ReportStatus
from webapp.platform.extensions import db
from webapp.services import targeting
from webapp.services.history.replay import _replay
from webapp.services.segments.rollout_state import rule_of

SEEDS = [int(s) for s in os.environ.get("ORACLE_SEEDS", "1,2,3,4,5").split(",")]
OPERATIONS = int(os.environ.get("ORACLE_OPERATIONS", "400"))
CONCURRENT_SEEDS = [int(s) for s in os.environ.get("ORACLE_CONCURRENT_SEEDS", "99").split(",")]


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


_reevaluating = threading.Lock()  # one worker runs the re-evaluations (RQ runs one job per operation)


def run_reevaluations() -> int:
    """Every queued re-evaluation operation to its end, oldest first, as the worker does (the
    job's own function); how many ran."""
    ran = 0
    with _reevaluating:
        while True:
            operation = db.session.scalars(
                sa.select(BulkOperation.id)
                .where(
                    BulkOperation.kind == OperationKind.REEVALUATE_RULES,
                    BulkOperation.status.in_((ReportStatus.QUEUED, ReportStatus.RUNNING)),
                )
                .order_by(BulkOperation.created_at)
            ).first()
            db.session.rollback()
            if operation is None:
                return ran
            tasks.run_bulk_operation(str(operation))
            ran += 1


def _jobs(app):
    def run(name: str) -> None:
        with app.app_context():
            if name == "run_reevaluations":
                run_reevaluations()
            else:
                getattr(tasks, name)()

    return run


def _rules_exact(app) -> list[str]:
    """Once every re-evaluation has run, each live rule segment's rows are exactly the users
    with traits its rules match in its rollout (the newest rules: nothing a superseded operation
    left behind), and each segment in rule mode has rules."""
    problems = []
    with app.app_context():
        run_reevaluations()
        traits = dict(db.session.execute(sa.text("SELECT user_id, traits FROM user_traits")).all())
        for segment in db.session.scalars(sa.select(Segment).where(Segment.deleted_at.is_(None))):
            rows = set(
                db.session.scalars(
                    sa.text("SELECT user_id FROM rule_matches WHERE segment_id = :s"), {"s": segment.id}
                )
            )
            if segment.rules is None:
                if rows or segment.rule_mode:
                    problems.append(f"{segment.slug}: no rules but rows {sorted(rows)} / rule mode")
                continue
            if not segment.rule_mode:
                problems.append(f"{segment.slug}: rules evaluated but not in rule mode")
            salt = db.session.scalar(
                sa.select(ExclusionGroup.salt).where(ExclusionGroup.name == segment.exclusion_group)
            )
            coverage, ruleset = rule_of(segment, salt), targeting.parse(segment.rules)
            want = {u for u, t in traits.items() if ruleset.match(t) is not None and coverage.covers(u)}
            if rows != want:
                problems.append(f"{segment.slug}: rows {sorted(rows)} != evaluation {sorted(want)}")
        # the script did exercise rules: rows written and deleted by trait writes and by
        # re-evaluations, some of them moving answers
        counts = db.session.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE action = 'added'), count(*) FILTER (WHERE action = 'removed'), "
                "count(*) FILTER (WHERE visible), count(DISTINCT actor) FROM membership_events WHERE reason = 'rule'"
            )
        ).one()
        if not all(counts):
            problems.append(f"no rule traffic to check: (added, removed, visible, actors) = {tuple(counts)}")
        # a rule row is visible exactly when it moved the user's answer: the replay credits an
        # entry to that very row (reports and segment activity list visible rows only)
        rows = db.session.execute(
            sa.text(
                "SELECT user_id, id, segment_slug, action, occurred_at, visible FROM membership_events "
                "WHERE reason = 'rule' ORDER BY user_id, id"
            )
        ).all()
        credited: dict[int, set[int]] = {}
        for user, row_id, slug, action, at, shown in rows:
            if user not in credited:
                credited[user] = {
                    step.key for _, step in _replay(db.session, user, None, oracle.now()) if step.stored
                }
            if shown != (row_id in credited[user]):
                problems.append(f"user {user}: rule row {slug} {action} at {at.isoformat()} visible={shown}")
        db.session.rollback()
    return problems


def _verify(app, run: oracle.Oracle) -> None:
    assert not (exact := _rules_exact(app)), run.failure(exact)
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


@pytest.mark.parametrize("seed", CONCURRENT_SEEDS)
def test_history_is_exact_under_concurrent_writers(redis_app, committed_db, seed):
    run = oracle.Oracle(_transport(redis_app), seed, run_job=_jobs(redis_app))
    run.setup()
    run.run(OPERATIONS, threads=6)
    _verify(redis_app, run)
