"""An add whose TTL is shorter than its wait for locks: reads and history still agree.

Found by the oracle's concurrent phase (seed 99: user 30 in O_GC by history, not by reads): an
add with ``ttl_seconds`` took its expiry from the request's start, but is stamped with the
database clock read after its locks. A change that waited longer than its TTL (behind a group
move of the segment, deadlock detection, a bulk chunk) wrote a membership already expired at its
own stamp: reads never counted it, history replayed its expiry before its ``added`` and so kept
the user in for ever. Real commits and a real lock held by another connection, so the wait is
deterministic: the writer waits about 1.3 s for a 1 s TTL. Checked once the TTL has passed
whichever way it was counted, so a slow machine cannot move the answer between the two reads.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from tests.support import oracle
from webapp.platform.extensions import db
from webapp.services.membership.store import BULK_LOCK_SPACE

USER, SLUG, HOLD = 4711, "LW_TTL", 1.3  # seconds the lock is held: longer than the 1 s TTL

pytestmark = pytest.mark.fault


def _held(app, lock_sql: str, params: dict, ready: threading.Event, release: threading.Event) -> None:
    """Hold a transaction-scoped advisory lock in a connection of its own until ``release``."""
    with app.app_context(), db.engine.connect() as conn, conn.begin():
        conn.execute(sa.text(lock_sql), params)
        ready.set()
        release.wait(10)


def _segments(client, user_id: int) -> frozenset[str]:
    answer = client.get(f"/api/v1/users/{user_id}/segments")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return frozenset(s["slug"] for s in answer.json["segments"])


def _history(client, user_id: int) -> frozenset[str]:
    """The segments the user's history (GET .../history, replayed) leaves them in."""
    answer = client.get(f"/api/v1/users/{user_id}/history")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    entries = [(e["segment"], e["operation"], e["occurred_at"], e["reason"]) for e in answer.json["items"]]
    return oracle.replay(entries)


@pytest.mark.parametrize("path", ["per-user change", "bulk add"])
def test_an_add_that_waited_past_its_ttl_reads_and_replays_alike(app, committed_db, path):
    client = app.test_client()
    created = client.post("/api/v1/segments", json={"slug": SLUG})
    assert created.status_code == 201, created.get_data(as_text=True)
    if path == "per-user change":
        lock = ("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))", {"key": USER})  # the user's lock
        request = ("POST", f"/api/v1/users/{USER}/segments", {"add": [{"slug": SLUG, "ttl_seconds": 1}]})
    else:
        with app.app_context():
            segment_id = db.session.scalar(sa.text("SELECT id FROM segments WHERE slug = :s"), {"s": SLUG})
        lock = ("SELECT pg_advisory_xact_lock(:space, :key)", {"space": BULK_LOCK_SPACE, "key": segment_id})
        request = ("POST", f"/api/v1/segments/{SLUG}/members", {"user_ids": [USER], "ttl_seconds": 1})
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_held, args=(app, *lock, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        answers: list = []
        writer = threading.Thread(
            target=lambda: answers.append(
                app.test_client().open(request[1], method=request[0], json=request[2])
            )
        )
        started = time.monotonic()
        writer.start()
        time.sleep(HOLD)  # the writer waits behind the lock, past its 1 s TTL
    finally:
        release.set()
        holder.join(10)
    writer.join(10)
    assert answers and answers[0].status_code == 200, answers and answers[0].get_data(as_text=True)
    assert time.monotonic() - started >= HOLD

    time.sleep(1.2)  # past the TTL, however it was counted: the answer no longer moves

    read, history = _segments(client, USER), _history(client, USER)
    assert read == history, f"reads say {sorted(read)}, history says {sorted(history)}"
    # The TTL counted from the instant the change happened (its history stamp), not from the
    # request's start, which the wait left behind: in for exactly one second, then out.
    entries = [e for e in client.get(f"/api/v1/users/{USER}/history").json["items"] if e["segment"] == SLUG]
    assert [e["operation"] for e in entries] == ["added", "removed"], entries
    added, removed = (oracle.parse_time(e["occurred_at"]) for e in entries)
    assert (removed - added).total_seconds() == 1, entries
