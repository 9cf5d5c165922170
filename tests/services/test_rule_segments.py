"""Rule segments (issue 29, stages 2-3): materialised matches, read, replayed and re-evaluated.

Every check compares three ways for every user: the single read, the batch lookup, and the
history replay's last entry per segment; and the expected membership computed here from the
traits, the rules (``RuleSet.match``) and the bucket (``rollout.Rule``), independently of the
writers.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from webapp.models import BulkOperation, MembershipEvent, Segment
from webapp.models.enums import Action, OperationKind, ReportStatus, Source
from webapp.services import impact, targeting
from webapp.services.history.replay import user_history
from webapp.services.membership import bulk
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.reads.path import active_segments, lookup
from webapp.services.segments.lifecycle import create_segment, update_segment
from webapp.services.segments.rollout_state import rule_of
from webapp.services.traits.users import delete_traits, patch_traits, replace_traits

RU_PAID = [
    {
        "conditions": [
            {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
            {"trait": "plan", "operator": "str_eq", "value": "paid"},
        ]
    }
]
NEW_APP = [{"conditions": [{"trait": "app", "operator": "semver_gte", "value": "5.2"}]}]
USERS = range(1, 61)


def run_operations(session) -> int:
    """Every queued re-evaluation to its end, oldest first (as the worker would); how many ran."""
    ran = 0
    while True:
        operation = session.scalars(
            sa.select(BulkOperation)
            .where(
                BulkOperation.kind == OperationKind.REEVALUATE_RULES,
                BulkOperation.status.in_((ReportStatus.QUEUED, ReportStatus.RUNNING)),
            )
            .order_by(BulkOperation.created_at, BulkOperation.id)
        ).first()
        if operation is None:
            return ran
        while bulk.run_chunk(session, operation):
            pass
        bulk.finish(session, operation)
        ran += 1


def traits_of(session) -> dict[int, dict]:
    return dict(session.execute(sa.text("SELECT user_id, traits FROM user_traits")).all())


def expected(session, slug: str) -> set[int]:
    """Users the rule segment covers by definition: traits stored, rules match, bucket inside."""
    segment = session.scalars(
        sa.select(Segment).where(Segment.slug == slug, Segment.deleted_at.is_(None))
    ).one()
    ruleset = targeting.parse(segment.rules)
    rule = rule_of(segment, None)
    return {u for u, t in traits_of(session).items() if ruleset.match(t) is not None and rule.covers(u)}


def answers(session, users=USERS) -> dict[int, set[str]]:
    single = {u: {a.slug for a in active_segments(session, u)} for u in users}
    batch = lookup(session, list(users)).answers()
    assert {u: {a.slug for a in answer} for u, answer in zip(users, batch, strict=True)} == single
    for u in users:  # the history replayed says the same, with no doubled entry
        state: dict[str, Action] = {}
        for entry in user_history(session, u):
            assert state.get(entry.segment) != entry.operation, (u, entry)
            state[entry.segment] = entry.operation
        assert {s for s, a in state.items() if a == Action.ADDED} == single[u], (u, state, single[u])
    return single


def members(session, slug: str) -> set[int]:
    return {u for u, slugs in answers(session).items() if slug in slugs}


def seed_traits(session, rng: random.Random) -> None:
    for u in USERS:
        if rng.random() < 0.8:
            replace_traits(
                session,
                u,
                {
                    "country": rng.choice(["RU", "BY", "US"]),
                    "plan": rng.choice(["paid", "free"]),
                    "app": rng.choice(["5.1", "5.2", "5.2.0", "5.10.1", "6.0.0-beta.1"]),
                },
                actor="svc",
            )


def test_a_rule_segment_answers_by_its_matches_exactly_and_history_says_so(db_session):
    rng = random.Random(7)
    seed_traits(db_session, rng)
    segment = create_segment(db_session, "R_PAID", rules=RU_PAID, actor="pm")
    assert segment.rule_mode and segment.rollout_basis_points == 10_000
    assert members(db_session, "R_PAID") == set()  # before the operation reaches anyone: nobody
    assert run_operations(db_session) == 1
    want = expected(db_session, "R_PAID")
    assert want and members(db_session, "R_PAID") == want
    sources = {a.source for u in want for a in active_segments(db_session, u)}
    assert sources == {Source.RULE}

    # a trait change moves the user in the same transaction, recorded with reason rule
    outsider = next(u for u in USERS if u not in want)
    patch_traits(db_session, outsider, {"country": "RU", "plan": "paid"}, actor="svc")
    assert "R_PAID" in {a.slug for a in active_segments(db_session, outsider)}
    row = db_session.scalars(
        sa.select(MembershipEvent)
        .where(MembershipEvent.user_id == outsider)
        .order_by(MembershipEvent.id.desc())
    ).first()
    assert (row.reason, row.action, row.actor, row.visible) == ("rule", "added", "svc", True)
    delete_traits(db_session, outsider, actor="gdpr")
    assert "R_PAID" not in {a.slug for a in active_segments(db_session, outsider)}

    # the percentage applies inside the matched audience; before the operation, the old answer
    # (so the change's impact is eventual: who moves once evaluated; a deletion's is every rule
    # member at once)
    before = members(db_session, "R_PAID")
    halving = impact.of_update(db_session, segment, 5000)
    assert halving.eventual and halving.own.joining == 0 and 0 < halving.own.leaving < len(before)
    assert (lambda m: (m.leaving, m.joining))(impact.of_delete(db_session, segment).moves[0]) == (
        len(before),
        0,
    )
    update_segment(db_session, "R_PAID", rollout_percent=50, actor="pm")
    assert members(db_session, "R_PAID") == before
    run_operations(db_session)
    half = expected(db_session, "R_PAID")
    assert half < before and members(db_session, "R_PAID") == half
    assert halving.own.leaving == len(before - half)

    # explicit beats rules; an api removal of a covered user excludes them
    covered = min(half)
    change_user_segments(db_session, covered, [], ["R_PAID"], actor="api")
    assert "R_PAID" not in {a.slug for a in active_segments(db_session, covered)}
    change_user_segments(db_session, covered, [AddSpec("R_PAID")], [], actor="api")
    assert members(db_session, "R_PAID") == half

    # rules removed: its rollout answers at once (users without traits included)
    update_segment(db_session, "R_PAID", rules=None, actor="pm")
    seg = db_session.scalars(sa.select(Segment).where(Segment.slug == "R_PAID")).one()
    plain = {u for u in USERS if rule_of(seg, None).covers(u)} | {covered}
    assert members(db_session, "R_PAID") == plain
    run_operations(db_session)
    assert (
        db_session.scalar(sa.text("SELECT count(*) FROM rule_matches WHERE segment_id = :s"), {"s": seg.id})
        == 0
    )
    assert members(db_session, "R_PAID") == plain


def test_a_plain_segment_given_rules_keeps_its_rollout_until_everyone_is_evaluated(db_session):
    rng = random.Random(11)
    seed_traits(db_session, rng)
    create_segment(db_session, "R_APP", rollout_percent=30, actor="pm")
    plain = members(db_session, "R_APP")
    update_segment(db_session, "R_APP", rules=NEW_APP, actor="pm")
    assert members(db_session, "R_APP") == plain  # still its rollout
    operation = db_session.scalars(
        sa.select(BulkOperation).where(BulkOperation.kind == OperationKind.REEVALUATE_RULES)
    ).one()
    bulk.run_chunk(db_session, operation)  # every user evaluated (one chunk), invisible rows
    assert members(db_session, "R_APP") == plain
    patch_traits(db_session, 1, {"app": "9.0"}, actor="svc")  # pending rows kept exact by trait writes
    while bulk.run_chunk(db_session, operation):
        pass
    bulk.finish(db_session, operation)
    want = expected(db_session, "R_APP")
    assert members(db_session, "R_APP") == want  # the switch: its rules from now on
    assert want != plain


def test_a_second_edit_supersedes_a_running_reevaluation(db_session):
    rng = random.Random(5)
    seed_traits(db_session, rng)
    create_segment(db_session, "R_SUP", rules=RU_PAID, actor="pm")
    run_operations(db_session)
    update_segment(db_session, "R_SUP", rules=NEW_APP, actor="pm")
    update_segment(db_session, "R_SUP", rollout_percent=40, actor="pm")
    first, second = db_session.scalars(
        sa.select(BulkOperation)
        .where(
            BulkOperation.kind == OperationKind.REEVALUATE_RULES, BulkOperation.status == ReportStatus.QUEUED
        )
        .order_by(BulkOperation.created_at, BulkOperation.id)
    ).all()
    assert not bulk.run_chunk(db_session, first) and first.error.startswith("superseded")
    assert first.done == 0
    while bulk.run_chunk(db_session, second):
        pass
    assert members(db_session, "R_SUP") == expected(db_session, "R_SUP")


def test_a_rule_segment_deleted_before_its_reevaluation_ran_leaves_history_and_reads_agreeing(db_session):
    """Found by the oracle: at 0% a deletion recorded no rollout change, so history kept the
    users of rows the pending re-evaluation had not cleared yet, while reads dropped them."""
    seed_traits(db_session, random.Random(3))
    create_segment(db_session, "R_DEL", rules=RU_PAID, actor="pm")
    run_operations(db_session)
    assert members(db_session, "R_DEL")
    update_segment(db_session, "R_DEL", rollout_percent=0, actor="pm")  # rows stay until evaluated
    assert members(db_session, "R_DEL")
    bulk.delete_segment(db_session, "R_DEL", actor="pm")
    assert members(db_session, "R_DEL") == set()  # (answers() checks history agrees, user by user)


def test_the_switch_takes_the_bulk_lock_of_the_membership_writers():
    from webapp.services.membership import store
    from webapp.services.segments import rollout_state

    assert rollout_state.BULK_LOCK_SPACE == store.BULK_LOCK_SPACE


def test_an_import_chunk_rematches_all_its_users_in_one_write(db_session):
    """An import chunk is one store.write of many users: their rule memberships come with it."""
    from webapp.services.traits.store import TraitWrite, write

    create_segment(db_session, "R_IMPORT", rules=RU_PAID, rollout_percent=60, actor="pm")
    run_operations(db_session)
    rng = random.Random(9)
    lines = [
        TraitWrite(
            u, {"country": rng.choice(["RU", "BY", "US"]), "plan": rng.choice(["paid", "free"])}, "replace"
        )
        for u in USERS
    ]
    result = write(db_session, lines, actor="import")
    want = expected(db_session, "R_IMPORT")
    assert want and result.rules_added == len(want) and members(db_session, "R_IMPORT") == want


def test_a_hashed_bucket_is_the_rules_bucket():
    """The trait write's shortcut (one hash per user for every rule segment) covers exactly whom
    the rollout's rule covers, in and out of groups (ranges)."""
    from webapp.services.rollout import buckets as rollout

    rng = random.Random(1)
    for _ in range(200):
        ranges = tuple(sorted({(a, a + rng.randint(1, 3000)) for a in rng.sample(range(0, 7000), 2)}))
        rule = rollout.Rule(rollout.SCHEME, f"salt{rng.random()}", ranges)
        for user in rng.sample(range(1, 2**62), 20):
            assert rollout.covers_hashed(rule, rollout.user_hash(user)) == rule.covers(user)


@pytest.mark.parametrize(
    "rules",
    [
        RU_PAID,  # tested in SQL, exactly
        [
            {
                "conditions": [
                    {"trait": "country", "operator": "str_eq", "value": "ru", "case_insensitive": True}
                ]
            }
        ],
        [
            {"conditions": [{"trait": "plan", "operator": "not_set"}]},
            {"conditions": [{"trait": "beta", "operator": "bool_eq", "value": True}]},
        ],
        NEW_APP,  # a version: decoded and matched in Python
        [{"conditions": [{"trait": "seen", "operator": "date_after", "value": "2026-06-01"}]}],
    ],
    ids=["sql-exact", "sql-confirmed", "sql-presence", "python-version", "python-date"],
)
def test_a_reevaluation_covers_exactly_who_the_rules_match_whichever_way_it_tests_them(db_session, rules):
    rng = random.Random(5)
    seed_traits(db_session, rng)
    for u in USERS:  # more kinds of trait, some of them unreadable under the operator
        if rng.random() < 0.5:
            patch_traits(
                db_session,
                u,
                {
                    "country": rng.choice(["RU", "ru", "Ru", "US"]),
                    "beta": rng.choice([True, False, "true", 1]),
                    "seen": rng.choice(["2026-05-31", "2026-06-02T00:00:00Z", "yesterday", 20260602]),
                    "plan": None if rng.random() < 0.3 else "paid",
                },
                actor="svc",
            )
    create_segment(db_session, "R_WAYS", rollout_percent=60, rules=rules, actor="pm")
    run_operations(db_session)
    want = expected(db_session, "R_WAYS")
    assert want and members(db_session, "R_WAYS") == want
