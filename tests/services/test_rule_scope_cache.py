"""The rule scope a trait write evaluates, kept per process by its fingerprint
(``membership.rules.lock_scope``): after every kind of change of rule segments — rules,
percentage, group, mode, deletion, restore, a description, a change rolled back, a database
emptied with its ids restarted — a trait write evaluates exactly what a read of the segments
would give, in one transaction and under concurrent changes (real threads and commits)."""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from tests.services.test_rule_segments import NEW_APP, RU_PAID, USERS, run_operations, seed_traits
from tests.support.checks import TABLES
from tests.support.threads import in_threads
from webapp.models import ExclusionGroup, Segment
from webapp.platform.extensions import db
from webapp.services import targeting
from webapp.services.membership import rules
from webapp.services.membership.bulk import delete_segment
from webapp.services.restore import restore_segment
from webapp.services.segments.lifecycle import create_segment, update_segment
from webapp.services.segments.rollout_state import lock_rule_set, rule_of
from webapp.services.traits.users import patch_traits

PLAN_PAID = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]


def kept_and_fresh(session) -> tuple[rules.RuleScope, rules.RuleScope]:
    """What a trait write evaluates (the kept scope, or read) and the scope read from the rows now,
    in the caller's transaction."""
    lock_rule_set(session, shared=True)
    kept, _ = rules.lock_scope(session)
    _, fresh = rules._read_scope(session)
    return kept, fresh


def assert_current(session, note: str) -> None:
    kept, fresh = kept_and_fresh(session)
    assert kept == fresh, note
    kept_again, _ = kept_and_fresh(session)
    assert kept_again is kept, f"{note}: the scope was read again with nothing changed"


def rewrite_all(session, rng: random.Random) -> None:
    """Every user's traits changed (and changed back to something): each a trait write."""
    for user in USERS:
        patch_traits(session, user, {"plan": rng.choice(["paid", "free"]), "n": rng.random()}, actor="svc")


def test_every_change_of_rule_segments_gives_a_trait_write_the_scope_a_read_gives(db_session):
    session, rng = db_session, random.Random(31)
    seed_traits(session, rng)
    create_segment(session, "SC_A", rules=RU_PAID, exclusion_group="SCG", rollout_percent=40)
    create_segment(session, "SC_B", exclusion_group="SCG", rollout_percent=30)
    create_segment(session, "SC_C", rules=NEW_APP)
    run_operations(session)
    assert_current(session, "created")
    rewrite_all(session, rng)
    changes = [
        ("rules", lambda: update_segment(session, "SC_A", rules=PLAN_PAID)),
        ("percentage", lambda: update_segment(session, "SC_C", rollout_percent=25)),
        ("group move", lambda: update_segment(session, "SC_C", exclusion_group="SCG")),
        ("neighbour's percentage", lambda: update_segment(session, "SC_B", rollout_percent=10)),
        ("description", lambda: update_segment(session, "SC_A", description="changed")),
        ("rules removed (mode)", lambda: update_segment(session, "SC_A", rules=None)),
        ("rules again", lambda: update_segment(session, "SC_A", rules=RU_PAID)),
        ("deletion", lambda: delete_segment(session, "SC_C")),
        ("restore", lambda: restore_segment(session, "SC_C")),
        ("neighbour deleted", lambda: delete_segment(session, "SC_B")),
    ]
    for note, change in changes:
        change()
        assert_current(session, f"after the {note}")
        rewrite_all(session, rng)  # (trait writes meanwhile: rows of the old rules, pending ones)
        run_operations(session)
        assert_current(session, f"after the {note}'s re-evaluation")
        rewrite_all(session, rng)
        assert not (problems := rows_not_exact(session)), (note, problems)


def rows_not_exact(session) -> list[str]:
    """Each live rule segment's rows against the evaluation of its rules now (its own buckets,
    or its ranges in its group)."""
    traits = dict(session.execute(sa.text("SELECT user_id, traits FROM user_traits")).all())
    problems = []
    for segment in session.scalars(
        sa.select(Segment).where(Segment.deleted_at.is_(None), Segment.rules.is_not(None))
    ):
        salt = session.scalar(
            sa.select(ExclusionGroup.salt).where(ExclusionGroup.name == segment.exclusion_group)
        )
        coverage, ruleset = rule_of(segment, salt), targeting.parse(segment.rules)
        want = {u for u, t in traits.items() if ruleset.match(t) is not None and coverage.covers(u)}
        rows = set(
            session.scalars(
                sa.text("SELECT user_id FROM rule_matches WHERE segment_id = :s"), {"s": segment.id}
            )
        )
        if rows != want:
            problems.append(f"{segment.slug}: rows {sorted(rows)} != evaluation {sorted(want)}")
    return problems


def test_a_change_rolled_back_leaves_no_scope_behind(db_session):
    session, rng = db_session, random.Random(32)
    seed_traits(session, rng)
    create_segment(session, "SC_R", rules=RU_PAID)
    run_operations(session)
    assert_current(session, "created")
    before, _ = kept_and_fresh(session)
    savepoint = session.begin_nested()
    update_segment(session, "SC_R", rules=NEW_APP, rollout_percent=50)
    rewrite_all(session, rng)  # (the scope of the change, kept under its row versions)
    inside, _ = kept_and_fresh(session)
    assert inside != before
    savepoint.rollback()
    kept, fresh = kept_and_fresh(session)
    assert kept == fresh == before


def test_a_database_emptied_with_its_ids_restarted_is_not_taken_for_the_old_one(app, committed_db):
    """Ids, slugs and versions repeat after TRUNCATE ... RESTART IDENTITY (each test with real
    commits ends with one): a scope kept by version counters would be the old one's."""
    session = committed_db
    for rules_given in (RU_PAID, PLAN_PAID):
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        create_segment(session, "SC_T", rules=rules_given)
        session.commit()
        kept, fresh = kept_and_fresh(session)
        assert kept == fresh and [s.ruleset for s in kept.segments] == [rules.ruleset_of(rules_given)]
        assert [(s.id, s.slug, s.rules_version) for s in kept.segments] == [(1, "SC_T", 1)]
        session.rollback()


WRITERS, SECONDS = 4, 6.0


@pytest.mark.fault
def test_kept_scopes_stay_exact_while_rule_segments_change_in_other_threads(app, committed_db):
    """Writers check, inside transactions holding the rule-set lock as a trait write does, that
    the scope kept for the fingerprint equals the one read from the rows, while a changer edits
    rules, percentages and groups, deletes and restores; then every user's traits are written
    again (the caches warm from all of that) and every rule segment's rows must be the
    evaluation of its newest rules."""
    client = app.test_client()
    for body in (
        {"slug": "SK_A", "rules": RU_PAID, "exclusion_group": "SKG", "rollout_percent": 40},
        {"slug": "SK_B", "rules": NEW_APP},
        {"slug": "SK_C", "exclusion_group": "SKG", "rollout_percent": 30},
    ):
        assert client.post("/api/v1/segments", json=body).status_code == 201
    rng = random.Random(33)
    for user in USERS:
        traits = {"country": rng.choice(["RU", "US"]), "plan": rng.choice(["paid", "free"]), "app": "5.2"}
        assert client.put(f"/api/v1/users/{user}/traits", json={"traits": traits}).status_code == 200
    deadline = time.monotonic() + SECONDS
    checks, changes = [0], [0]
    guard = threading.Lock()

    def changer() -> None:
        own, r = app.test_client(), random.Random(34)
        while time.monotonic() < deadline:
            slug = r.choice(("SK_A", "SK_B"))
            pick = r.random()
            if pick < 0.35:
                answer = own.patch(
                    f"/api/v1/segments/{slug}", json={"rules": r.choice([RU_PAID, NEW_APP, PLAN_PAID])}
                )
            elif pick < 0.6:
                answer = own.patch(
                    f"/api/v1/segments/{slug}", json={"rollout_percent": r.choice((10, 20, 50))}
                )
            elif pick < 0.75:
                answer = own.patch("/api/v1/segments/SK_B", json={"exclusion_group": r.choice(("SKG", None))})
            elif pick < 0.9:
                answer = own.delete(f"/api/v1/segments/{slug}")
                if answer.status_code == 200:
                    assert own.post(f"/api/v1/segments/{slug}/restore").status_code < 300
            else:
                answer = own.patch("/api/v1/segments/SK_C", json={"rollout_percent": r.choice((5, 30))})
            assert answer.status_code < 500, answer.get_json()
            with guard:
                changes[0] += 1

    def writer(index: int) -> None:
        if index == 0:
            changer()
            return
        own = app.test_client()
        r = random.Random(index)
        while time.monotonic() < deadline:
            with app.app_context():
                kept, fresh = kept_and_fresh(db.session)
                db.session.rollback()
            assert kept.segments == fresh.segments
            user = r.choice(USERS)
            answer = own.patch(
                f"/api/v1/users/{user}/traits", json={"traits": {"plan": r.choice(["paid", "free"])}}
            )
            assert answer.status_code == 200, answer.get_json()
            with guard:
                checks[0] += 1

    in_threads(WRITERS, writer, timeout=120)
    assert checks[0] > 20 and changes[0] > 5, (checks, changes)
    from tests.services.test_history_oracle import _rules_exact, run_reevaluations

    with app.app_context():
        run_reevaluations()
    for user in USERS:  # every trait written again, after the last change and its re-evaluation
        answer = client.patch(f"/api/v1/users/{user}/traits", json={"traits": {"n": user}})
        assert answer.status_code == 200
    assert not (problems := _rules_exact(app)), problems
