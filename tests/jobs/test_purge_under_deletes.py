"""5. The nightly purge removes everything expired even while other writers remove some of
its rows, and two purges at once share the work exactly."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from webapp.platform.extensions import db

pytestmark = pytest.mark.fault

USERS = 100_000
SLUGS = ("PURGE_A", "PURGE_B", "PURGE_C")
EXPIRED = USERS * len(SLUGS)  # 300k
LIVE = 1_000


def seed(app) -> None:
    """300k memberships that expired over the last days (three segments x 100k users), bulk
    inserted with SQL, and LIVE memberships that have not expired."""
    client = app.test_client()
    for slug in (*SLUGS, "PURGE_LIVE"):
        assert client.post("/api/v1/segments", json={"slug": slug}).status_code == 201
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                "SELECT g, s.id, now() - interval '10 days', now() - interval '1 day' - (g || ' seconds')::interval "
                "FROM generate_series(1, :n) g, segments s WHERE s.slug = ANY(:slugs)"
            ),
            {"n": USERS, "slugs": list(SLUGS)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                "SELECT g, s.id, now(), now() + interval '1 day' FROM generate_series(1, :n) g, segments s "
                "WHERE s.slug = 'PURGE_LIVE'"
            ),
            {"n": LIVE},
        )
    assert expired_left() == EXPIRED


def expired_left() -> int:
    with db.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM memberships WHERE expires_at <= now()"))


def live_left() -> int:
    with db.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM memberships WHERE expires_at > now()"))


def in_threads(app, *work):
    """Run each callable in a thread of its own with its own app context (so its own session
    and connection), all released at once; returns their results."""
    barrier = threading.Barrier(len(work))
    results: list[object] = [None] * len(work)
    crashes: list[BaseException] = []

    def run(i, fn):
        with app.app_context():
            try:
                barrier.wait(30)
                results[i] = fn()
            except BaseException as exc:  # surfaced below
                crashes.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(work)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is still running after 60 s"
    assert not crashes, crashes
    return results


@pytest.mark.slow
def test_purge_removes_everything_expired_while_another_writer_deletes_its_rows(app, committed_db):
    from webapp.jobs.tasks import purge_expired

    seed(app)
    purge_done = threading.Event()
    batches, deleted_while_purging = 0, 0

    def purge():
        try:
            return purge_expired(batch_size=20_000)
        finally:
            purge_done.set()

    def other_writer():
        nonlocal batches, deleted_while_purging
        rng = random.Random(5)
        deleted = 0
        while not purge_done.is_set() or batches < 20:
            ids = rng.sample(range(1, USERS + 1), 100)
            purging = not purge_done.is_set()
            with db.engine.begin() as conn:  # small committed batches of random expired rows
                count = conn.execute(
                    sa.text("DELETE FROM memberships WHERE user_id = ANY(:ids) AND expires_at <= now()"),
                    {"ids": ids},
                ).rowcount
            deleted += count
            deleted_while_purging += count if purging and not purge_done.is_set() else 0
            batches += 1
        return deleted

    purged, deleted = in_threads(app, purge, other_writer)
    assert deleted_while_purging > 0, "the other writer deleted nothing while the purge ran"
    assert expired_left() == 0, f"purge returned {purged}, the other writer deleted {deleted}"
    assert purged + deleted == EXPIRED, f"purge {purged} + concurrent deletions {deleted} != {EXPIRED}"
    assert live_left() == LIVE


@pytest.mark.slow
def test_two_purges_at_once_finish_with_a_combined_count_of_everything_expired(app, committed_db):
    from webapp.jobs.tasks import purge_expired

    seed(app)
    first, second = in_threads(
        app, lambda: purge_expired(batch_size=20_000), lambda: purge_expired(batch_size=20_000)
    )
    assert expired_left() == 0, (first, second)
    assert first + second == EXPIRED, (first, second)
    assert live_left() == LIVE
