"""Impact before a restore (issue 24, items 1 and 7): a restore moves users too, so its preview
(services.impact.preview_restore, the API's ``change: "restore"``) counts them; the numbers are
exactly the ``added`` / ``removed`` entries the restore then writes at its instant, per segment,
in every known user's history (history.user_history, the replay).

Cases: random segments with and without groups, expiring members and exclusions; a group whose
other rollout gave the deleted segment's explicit members a home (they leave it on restore);
a group that is full by then (restored at 0%: only explicit members come back); a preview
against a newer catalog refused (409 ``impact_changed``)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.moves import history_moves, known_users, preview_moves
from webapp.errors import AppError, Conflict
from webapp.services import impact, restore
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DELETED = T0 + timedelta(hours=1)
RESTORE = T0 + timedelta(hours=5)
USERS = 300


def restore_and_compare(session, slug: str) -> impact.Impact:
    preview = impact.preview_restore(session, slug, now=RESTORE)
    assert preview.segment == slug and preview.moves[0].slug == slug
    restore.restore_segment(session, slug, actor="pm", now=RESTORE, expected_version=preview.catalog_version)
    assert history_moves(session, known_users(session), RESTORE) == preview_moves(preview)
    return preview


@pytest.mark.parametrize("seed", range(12))
def test_the_restore_preview_is_what_history_then_records(db_session, seed):
    rng = random.Random(seed)
    slugs = [f"S{i}" for i in range(rng.randint(2, 4))]
    at = T0
    for slug in slugs:
        at += timedelta(seconds=1)
        group = rng.choice([None, "G1", "G1"])
        try:
            with db_session.begin_nested():
                segments.create_segment(
                    db_session,
                    slug,
                    rollout_percent=rng.choice([0, 10, 25, 40]),
                    exclusion_group=group,
                    now=at,
                )
        except AppError:
            segments.create_segment(db_session, slug, rollout_percent=0, now=at)
    for slug in slugs:
        at += timedelta(seconds=1)
        try:
            with db_session.begin_nested():
                bulk.bulk_add(db_session, slug, rng.sample(range(1, USERS), rng.randint(5, 60)), now=at)
        except Conflict:
            pass
        if rng.random() < 0.6:  # some expire while the segment is deleted
            at += timedelta(seconds=1)
            try:
                with db_session.begin_nested():
                    until = DELETED + timedelta(hours=rng.choice([1, 10]))
                    bulk.bulk_add(db_session, slug, rng.sample(range(1, USERS), 15), expires_at=until, now=at)
            except Conflict:
                pass
        if rng.random() < 0.6:
            at += timedelta(seconds=1)
            bulk.bulk_remove(db_session, slug, rng.sample(range(1, USERS), rng.randint(3, 30)), now=at)
    gone = rng.choice(slugs)
    bulk.delete_segment(db_session, gone, now=DELETED)
    if rng.random() < 0.5:  # the group's others move meanwhile
        other = rng.choice([s for s in slugs if s != gone])
        try:
            with db_session.begin_nested():
                segments.update_segment(
                    db_session,
                    other,
                    rollout_percent=rng.choice([5, 60, 90]),
                    now=DELETED + timedelta(hours=1),
                )
        except AppError:
            pass
    try:
        preview = impact.preview_restore(db_session, gone, now=RESTORE)
    except AppError as refused:  # refused alike
        with pytest.raises(type(refused)) as also:
            restore.restore_segment(db_session, gone, now=RESTORE)
        assert also.value.details[0]["code"] == refused.details[0]["code"]
        return
    restore.restore_segment(db_session, gone, now=RESTORE)
    assert history_moves(db_session, known_users(db_session), RESTORE) == preview_moves(preview), seed


def test_restoring_into_a_group_takes_users_back_from_the_other_rollout(db_session):
    """The walkthrough's case: AVITO_DISCOUNT_30's explicit members held the group; deleted, the
    ones AVITO_DISCOUNT_50's rollout covers joined it; restored, exactly those leave it again."""
    segments.create_segment(
        db_session, "AVITO_DISCOUNT_50", rollout_percent=0, exclusion_group="DISCOUNTS", now=T0
    )
    segments.create_segment(
        db_session, "AVITO_DISCOUNT_30", rollout_percent=20, exclusion_group="DISCOUNTS", now=T0
    )
    bulk.bulk_add(db_session, "AVITO_DISCOUNT_30", list(range(1, 1001, 3)), now=T0 + timedelta(seconds=1))
    bulk.bulk_remove(db_session, "AVITO_DISCOUNT_30", list(range(2, 1001, 11)), now=T0 + timedelta(seconds=1))
    # raised later: its rollout covers some of AVITO_DISCOUNT_30's explicit members (held there)
    segments.update_segment(
        db_session, "AVITO_DISCOUNT_50", rollout_percent=20, now=T0 + timedelta(seconds=2)
    )
    bulk.delete_segment(db_session, "AVITO_DISCOUNT_30", now=DELETED)
    joined = history_moves(db_session, known_users(db_session), DELETED)["AVITO_DISCOUNT_50"][1]
    assert joined > 0  # the deletion gave AVITO_DISCOUNT_50 users
    preview = restore_and_compare(db_session, "AVITO_DISCOUNT_30")
    assert preview.own.joining > 0
    [other] = preview.others
    assert (other.slug, other.leaving, other.joining) == ("AVITO_DISCOUNT_50", joined, 0)


def test_a_full_group_restores_at_zero_and_the_preview_says_so(db_session):
    """The group filled meanwhile: the restore comes back at 0%, so only its explicit members
    return (leaving the other rollout where it covered them); the preview counts the same."""
    segments.create_segment(db_session, "KEEP", rollout_percent=0, exclusion_group="FULL", now=T0)
    segments.create_segment(db_session, "BACK", rollout_percent=40, exclusion_group="FULL", now=T0)
    bulk.bulk_add(db_session, "BACK", list(range(1, 601, 4)), now=T0 + timedelta(seconds=1))
    segments.update_segment(db_session, "KEEP", rollout_percent=30, now=T0 + timedelta(seconds=2))
    bulk.delete_segment(db_session, "BACK", now=DELETED)
    segments.update_segment(db_session, "KEEP", rollout_percent=100, now=DELETED + timedelta(minutes=5))
    preview = impact.preview_restore(db_session, "BACK", now=RESTORE)
    result = restore.restore_segment(db_session, "BACK", now=RESTORE)
    assert result.at_zero
    assert history_moves(db_session, known_users(db_session), RESTORE) == preview_moves(preview)
    explicit = len(range(1, 601, 4))
    assert preview.own == impact.Move("BACK", 0, explicit)
    [other] = preview.others  # KEEP at 100% covered all of them: they leave it
    assert (other.slug, other.leaving, other.joining) == ("KEEP", explicit, 0)


def test_a_restore_against_a_newer_catalog_is_refused_with_nothing_changed(db_session):
    segments.create_segment(db_session, "AGAIN", rollout_percent=10, now=T0)
    bulk.bulk_add(db_session, "AGAIN", [1, 2, 3], now=T0)
    bulk.delete_segment(db_session, "AGAIN", now=DELETED)
    preview = impact.preview_restore(db_session, "AGAIN", now=RESTORE)
    segments.create_segment(db_session, "ELSEWHERE", rollout_percent=1, now=T0)  # the catalog moves on
    with pytest.raises(Conflict) as refused:
        restore.restore_segment(db_session, "AGAIN", now=RESTORE, expected_version=preview.catalog_version)
    [item] = refused.value.details
    assert item["code"] == "impact_changed" and item["catalog_version"] > preview.catalog_version
    assert restore.find_deleted(db_session, "AGAIN").deleted_at is not None


def test_a_preview_is_refused_as_the_restore_would_be(db_session):
    segments.create_segment(db_session, "TAKEN", rollout_percent=10, now=T0)
    bulk.delete_segment(db_session, "TAKEN", now=DELETED)
    segments.create_segment(db_session, "TAKEN", rollout_percent=5, now=DELETED + timedelta(minutes=1))
    with pytest.raises(Conflict) as refused:
        impact.preview_restore(db_session, "TAKEN", now=RESTORE)
    assert refused.value.details[0]["code"] == "slug_taken_since"
