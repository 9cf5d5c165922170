"""The impact preview of changes that re-evaluate rule segments (issue 29, the rule builder's
confirmation): what ``impact.preview_update`` says a change of rules, percentage or group will
move, once its re-evaluation has reached everyone, is what the reads then answer.

Every user of the universe is known (traits, or an explicit membership of a filler segment), so
the preview counts exactly the users whose answers can move. Random changes, seeded: each is
previewed, made, run to its end, and the segment's members before and after are compared user by
user with the preview's numbers.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.services.test_rule_segments import NEW_APP, RU_PAID, run_operations, seed_traits
from webapp.errors import AppError
from webapp.services import impact
from webapp.services.common import utcnow
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.reads.path import lookup
from webapp.services.segments import schedules
from webapp.services.segments.lifecycle import UNSET, create_segment, update_segment

UNIVERSE = range(1, 81)  # users 1-60 may have traits (seed_traits), 61-80 never do
US_FREE = [
    {"conditions": [{"trait": "country", "operator": "str_eq", "value": "US"}]},
    {"conditions": [{"trait": "plan", "operator": "str_eq", "value": "free", "case_insensitive": True}]},
]
CHOICES = [RU_PAID, NEW_APP, US_FREE, None]


def members_of(session, slug: str) -> set[int]:
    answers = lookup(session, list(UNIVERSE)).answers()
    return {u for u, answer in zip(UNIVERSE, answers, strict=True) if slug in {a.slug for a in answer}}


def make_known(session) -> None:
    """Every user of the universe seen somewhere (the preview counts known users only)."""
    create_segment(session, "FILLER", actor="t")
    for u in UNIVERSE:
        change_user_segments(session, u, [AddSpec("FILLER")], [], actor="t")


def check(
    session, slug: str, *, percent: object = UNSET, group: object = UNSET, rules: object = UNSET
) -> None:
    before = members_of(session, slug)
    found = impact.preview_update(session, slug, rollout_percent=percent, exclusion_group=group, rules=rules)
    update_segment(session, slug, rollout_percent=percent, exclusion_group=group, rules=rules, actor="pm")
    run_operations(session)
    after = members_of(session, slug)
    assert (found.own.leaving, found.own.joining) == (len(before - after), len(after - before)), (
        rules,
        percent,
        group,
    )
    assert found.known_users == len(UNIVERSE)


@pytest.mark.parametrize("seed", range(6))
def test_a_rule_change_previews_exactly_the_moves_its_reevaluation_makes(db_session, seed):
    rng = random.Random(seed)
    seed_traits(db_session, rng)
    make_known(db_session)
    create_segment(db_session, "RULED", rollout_percent=rng.choice([10, 50, 100]), actor="pm")
    create_segment(db_session, "OTHER", exclusion_group="G", rollout_percent=30, actor="pm")
    for u in rng.sample(list(UNIVERSE), 8):  # explicit members: kept whatever the rules say
        change_user_segments(db_session, u, [AddSpec("RULED")], [], actor="api")
    for u in rng.sample(list(UNIVERSE), 4):  # explicit members of the group's other segment
        change_user_segments(db_session, u, [AddSpec("OTHER")], [], actor="api")
    rules_now: object = None
    for _ in range(7):
        move = rng.choice(["rules", "rules", "percent", "group"])
        try:
            if move == "rules" or rules_now is None:
                choice = rng.choice([r for r in CHOICES if r != rules_now])
                check(db_session, "RULED", rules=choice)
                rules_now = choice
            elif move == "percent":
                check(db_session, "RULED", percent=rng.choice([5, 20, 50, 70, 100]))
            else:
                check(db_session, "RULED", group=rng.choice(["G", None]))
        except AppError as exc:  # refused as the change itself is (no room in the group, an overlap)
            assert exc.status in {409, 422} and exc.code != "rules_invalid", exc.code


def test_a_rule_change_is_eventual_and_removing_rules_is_not(db_session):
    seed_traits(db_session, random.Random(3))
    create_segment(db_session, "PLAIN", rollout_percent=50, actor="pm")
    given = impact.preview_update(db_session, "PLAIN", rules=RU_PAID)
    assert given.eventual and given.own.leaving > 0  # the 50% of users outside RU/BY paid leave
    update_segment(db_session, "PLAIN", rules=RU_PAID, actor="pm")
    run_operations(db_session)
    assert impact.preview_update(db_session, "PLAIN", rollout_percent=20).eventual
    assert not impact.preview_update(db_session, "PLAIN", rules=None).eventual
    # unchanged rules and percentage: nothing to re-evaluate, nothing moves
    same = impact.preview_update(db_session, "PLAIN", rules=RU_PAID, rollout_percent=50)
    assert (same.leaving, same.joining, same.eventual) == (0, 0, False)


def test_a_preview_refuses_what_the_change_refuses(db_session):
    create_segment(db_session, "SCHEDULED", actor="pm")
    schedules.add(db_session, "SCHEDULED", utcnow() + timedelta(days=1), 50, actor="pm")
    with pytest.raises(AppError) as refused:
        impact.preview_update(db_session, "SCHEDULED", rules=RU_PAID)
    assert refused.value.status == 409 and refused.value.details[0]["code"] == "rules_with_schedule"
    with pytest.raises(AppError) as invalid:
        impact.preview_update(db_session, "SCHEDULED", rules=[{"conditions": [{"trait": "x"}]}])
    assert invalid.value.status == 422
