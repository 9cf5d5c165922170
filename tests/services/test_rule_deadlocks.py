"""Trait writers, rule changes, re-evaluations, per-user and bulk membership changes of the same
segments and groups at once: no deadlock for PostgreSQL to break, no 5xx, and afterwards every
rule segment's rows are its newest evaluation and every user's reads equal their history
(issue 29). Real threads and commits; the deadlock count is PostgreSQL's (pg_stat_database)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.services.test_history_oracle import _rules_exact, run_reevaluations
from tests.support import oracle
from tests.support.checks import deadlocks
from tests.support.threads import in_threads

pytestmark = pytest.mark.fault

USERS, WRITERS, SECONDS = 120, 8, 5.0
RULES = [
    [{"conditions": [{"trait": "country", "operator": "str_in", "values": ["RU", "BY"]}]}],
    [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}],
]


def test_trait_writes_rule_changes_and_reevaluations_never_deadlock(app, committed_db):
    setup = app.test_client()
    for body in (
        {"slug": "RD_A", "rules": RULES[0], "exclusion_group": "RDG", "rollout_percent": 40},
        {"slug": "RD_B", "rules": RULES[1]},
        {"slug": "RD_C", "exclusion_group": "RDG", "rollout_percent": 30},
        {"slug": "RD_D", "rollout_percent": 20},
    ):
        assert setup.post("/api/v1/segments", json=body).status_code == 201
    before = deadlocks(app)
    statuses: Counter[tuple[str, int]] = Counter()
    deadline = time.monotonic() + SECONDS

    def writer(index: int) -> None:
        rng, client = random.Random(index), app.test_client()
        while time.monotonic() < deadline:
            kind = rng.choice(("traits", "traits", "traits", "change", "bulk", "rules", "reevaluate"))
            user = rng.randint(1, USERS)
            if kind == "traits":
                traits = {"country": rng.choice(("RU", "BY", "US")), "plan": rng.choice(("paid", "free"))}
                method = rng.choice(("put", "patch", "delete"))
                path = f"/api/v1/users/{user}/traits"
                answer = (
                    client.delete(path)
                    if method == "delete"
                    else getattr(client, method)(path, json={"traits": traits})
                )
            elif kind == "change":
                slug = rng.choice(("RD_A", "RD_B", "RD_C", "RD_D"))
                body = {"add": [slug], "del": []} if rng.random() < 0.5 else {"add": [], "del": [slug]}
                answer = client.post(f"/api/v1/users/{user}/segments", json=body)
            elif kind == "bulk":
                ids = rng.sample(range(1, USERS + 1), 20)
                slug = rng.choice(("RD_A", "RD_C", "RD_D"))
                answer = client.open(
                    f"/api/v1/segments/{slug}/members",
                    method=rng.choice(("POST", "DELETE")),
                    json={"user_ids": ids},
                )
            elif kind == "rules":
                body = (
                    {"rules": rng.choice(RULES)}
                    if rng.random() < 0.6
                    else {"rollout_percent": rng.choice((10, 40, 60))}
                )
                answer = client.patch(f"/api/v1/segments/{rng.choice(('RD_A', 'RD_B'))}", json=body)
            else:
                with app.app_context():
                    run_reevaluations()
                continue
            statuses[(kind, answer.status_code)] += 1

    in_threads(WRITERS, writer, timeout=120)
    broken = deadlocks(app) - before
    assert broken == 0, f"PostgreSQL broke {broken} deadlock(s); answers {dict(statuses)}"
    assert not any(status >= 500 for _, status in statuses), statuses
    assert statuses[("traits", 200)] > 50 and statuses[("rules", 200)] > 3, statuses
    # afterwards: rows exact for the newest rules, reads == lookup == history for everyone
    assert not (problems := _rules_exact(app)), problems
    client = app.test_client()

    def call(method, path, body=None):
        answer = client.open(path, method=method, json=body)
        return answer.status_code, answer.get_json(silent=True)

    check = oracle.Oracle(call, 0, users=USERS)
    assert not (problems := check.check()), problems[:20]
