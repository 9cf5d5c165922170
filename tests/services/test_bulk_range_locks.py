"""A bulk chunk of a segment stalls per-user writes of the users it covers, and only them.

A chunk holds its segment's bulk lock for its users' id ranges (membership_store.lock_segment_bulk,
issue 28 item 3). Here a real chunk (the statements a background chunk runs: ``bulk._add``,
``bulk._remove``, a replace's removal window) is left open in a connection of its own, mid-
transaction, while per-user writes of the same segment run in real threads: a user outside the
chunk's ranges is written at once, a user inside it waits until the chunk commits and is then
decided from the chunk's rows and recorded after it in history. Chunks whose ids are too spread
out, and re-evaluation chunks, still hold the whole segment. Waits are bounded, never timed
against an absolute limit: "at once" means before the chunk is let go (it waits up to 30 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.support import oracle
from tests.support.threads import in_threads
from webapp.models import Segment
from webapp.models.enums import Reason
from webapp.platform.extensions import db
from webapp.services.membership import bulk
from webapp.services.membership import store as membership_store
from webapp.services.segments import lifecycle

pytestmark = pytest.mark.fault

SLUG, OTHER = "RL_BUSY", "RL_OTHER"
CHUNK = list(range(100_000, 105_000))  # a chunk of 5,000 dense ids (two 4,096-id ranges)
INSIDE, OUTSIDE = 102_345, 5_000_000
HOLD = 30.0  # the longest the open chunk waits to be let go


def _segment() -> Segment:
    segment = db.session.scalar(sa.select(Segment).where(Segment.slug == SLUG))
    assert segment is not None
    return segment


@contextmanager
def _open_chunk(app, chunk: Callable[[Segment], None]) -> Iterator[threading.Event]:
    """Run ``chunk`` in a transaction of its own (another thread and connection) and keep it open
    until the block ends; yields the event that lets it commit."""
    ready, release, crashed = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            with app.app_context():
                chunk(db.session.get(Segment, _segment().id, with_for_update={"read": True}))
                ready.set()
                release.wait(HOLD)
                db.session.commit()
        except BaseException as exc:  # surfaced below
            crashed.append(exc)
            ready.set()

    holder = threading.Thread(target=run)
    holder.start()
    try:
        assert ready.wait(20) and not crashed, crashed
        yield release
    finally:
        release.set()
        holder.join(30)
    assert not crashed, crashed


def _write(app, user: int, body: dict, into: list) -> None:
    """A per-user change through the API; its answer and when it came back go into ``into``."""
    answer = app.test_client().post(f"/api/v1/users/{user}/segments", json=body)
    into.append((time.monotonic(), answer.status_code, answer.get_json()))


def _entries(client, user: int) -> list[tuple]:
    answer = client.get(f"/api/v1/users/{user}/history")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return [(e["segment"], e["operation"], e["occurred_at"], e["reason"]) for e in answer.json["items"]]


def _reads(client, user: int) -> frozenset[str]:
    answer = client.get(f"/api/v1/users/{user}/segments")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return frozenset(s["slug"] for s in answer.json["segments"])


@pytest.fixture
def segments(app, committed_db):
    client = app.test_client()
    for slug in (SLUG, OTHER):
        assert client.post("/api/v1/segments", json={"slug": slug}).status_code == 201


def _add_chunk(segment: Segment) -> None:
    bulk._add(db.session, CHUNK, segment, None, Reason.API, "chunk")


def _remove_chunk(segment: Segment) -> None:
    bulk._remove(db.session, CHUNK, segment, Reason.API, "chunk")


def _removal_window(segment: Segment) -> None:
    """A replace's removal pass over the window of CHUNK's users (none of them listed)."""
    leaving = membership_store.lock_unlisted_members(
        db.session, segment.id, listed=None, operation_id=None, after=CHUNK[0] - 1, upto=CHUNK[-1]
    )
    bulk._remove(db.session, leaving, segment, Reason.API, "chunk")


@pytest.mark.parametrize(
    "chunk, members_before",
    [(_add_chunk, False), (_remove_chunk, True), (_removal_window, True)],
    ids=["add", "remove", "replace-removal-window"],
)
def test_a_chunk_stalls_only_the_users_it_covers(app, segments, chunk, members_before):
    client = app.test_client()
    if members_before:  # the chunk takes them out (the add in the request: committed at once)
        added = client.post(f"/api/v1/segments/{SLUG}/members", json={"user_ids": CHUNK})
        assert added.status_code == 200, added.get_data(as_text=True)
    outside: list = []
    inside: list = []
    # The user inside the chunk: a change that flips what the chunk did (out of an add, in
    # after a removal): decided from the chunk's rows only if it waited for the chunk to commit.
    flip = {"del": [SLUG]} if not members_before else {"add": [SLUG]}
    with _open_chunk(app, chunk) as release:
        in_threads(1, lambda _: _write(app, OUTSIDE, {"add": [SLUG, OTHER]}, outside), timeout=20)
        waiting = threading.Thread(target=_write, args=(app, INSIDE, flip, inside))
        waiting.start()
        time.sleep(1.0)
        assert not inside, f"user {INSIDE} was written while a chunk covering it was open: {inside}"
        released = time.monotonic()
        release.set()
        waiting.join(30)
    assert outside and outside[0][1] == 200, outside  # written while the chunk was open
    assert outside[0][0] < released
    assert inside and inside[0][1] == 200, inside
    answer = inside[0][2]
    # it saw the chunk's committed rows: it removed a member the chunk added, or added one back
    moved = {key: answer[key] for key in ("added", "updated", "unchanged", "removed", "not_members")}
    assert moved == {
        "added": [] if not members_before else [SLUG],
        "updated": [],
        "unchanged": [],
        "removed": [SLUG] if not members_before else [],
        "not_members": [],
    }, answer
    # history: the chunk's entry, then the per-user change's, stamped in commit order
    entries = [e for e in _entries(client, INSIDE) if e[0] == SLUG]
    chunk_op = "added" if not members_before else "removed"
    user_op = "removed" if not members_before else "added"
    assert [e[1] for e in entries][-2:] == [chunk_op, user_op], entries
    assert oracle.parse_time(entries[-2][2]) < oracle.parse_time(entries[-1][2]), entries
    for user in (INSIDE, OUTSIDE, CHUNK[0], CHUNK[-1]):
        assert _reads(client, user) == oracle.replay(_entries(client, user)), user
        assert not oracle.doubled(_entries(client, user)), user


def test_a_chunk_of_spread_out_ids_still_holds_the_whole_segment(app, segments):
    """Ids more than RANGE_KEYS ranges apart at every level: the whole segment, as before."""
    spread = [7, 2**40]
    assert membership_store.bulk_hold((spread[0], spread[-1])).level is None

    def spread_chunk(segment: Segment) -> None:
        bulk._add(db.session, spread, segment, None, Reason.API, "chunk")

    _a_write_outside_waits_for(app, spread_chunk, "a chunk held the whole segment")


def test_a_change_of_many_segments_waits_for_any_chunk_of_them(app, segments):
    """More than RANGE_SEGMENTS segments: their BULK_LOCK_SPACE keys shared, one each (a change
    of 1,000 segments would otherwise hold 3,000 entries of the server's lock table)."""
    client = app.test_client()
    many = [f"RL_M{i}" for i in range(membership_store.RANGE_SEGMENTS)]
    for slug in many:
        assert client.post("/api/v1/segments", json={"slug": slug}).status_code == 201
    outside: list = []
    with _open_chunk(app, _add_chunk) as release:
        few = threading.Thread(target=_write, args=(app, OUTSIDE, {"add": [SLUG, *many[1:]]}, outside))
        few.start()  # RANGE_SEGMENTS segments: ranges, through at once
        few.join(20)
        assert outside and outside[0][1] == 200, outside
        waiting = threading.Thread(target=_write, args=(app, OUTSIDE + 1, {"add": [SLUG, *many]}, outside))
        waiting.start()
        time.sleep(1.0)
        assert len(outside) == 1, "a change of many segments went through while a chunk of one was open"
        release.set()
        waiting.join(30)
    assert len(outside) == 2 and outside[1][1] == 200, outside


def test_a_reevaluation_chunk_still_holds_the_whole_segment(app, segments):
    """Its users are read after its locks: lock_segments_bulk stalls every per-user write."""
    _a_write_outside_waits_for(
        app, lambda s: membership_store.lock_segments_bulk(db.session, [s.id]), "a re-evaluation chunk"
    )


def _a_write_outside_waits_for(app, chunk, what: str) -> None:
    """A write of a user outside ``chunk``'s ids to its segment waits until the chunk commits
    (nothing within a second of it held open), then goes through."""
    outside: list = []
    with _open_chunk(app, chunk) as release:
        waiting = threading.Thread(target=_write, args=(app, OUTSIDE, {"add": [SLUG]}, outside))
        waiting.start()
        time.sleep(1.0)
        assert not outside, f"a write went through while {what} was open"
        release.set()
        waiting.join(30)
    assert outside and outside[0][1] == 200, outside


def test_what_a_chunk_locks(app, db_session):
    """The ranges a chunk takes: the finest level that fits in RANGE_KEYS keys, else the segment;
    more chunks in one transaction add keys, never of a finer level than one held."""
    assert membership_store.bulk_hold((100_000, 104_999)) == membership_store.BulkHold(0, 24, 25)
    wide = membership_store.bulk_hold((1, 10_000_000))
    assert wide.level == 1 and (wide.first, wide.last) == (0, 2)
    assert membership_store.bulk_hold(None).level is None
    assert membership_store.bulk_hold((1, 2**63 - 1)).level is None
    segment_id = lifecycle.create_segment(db_session, "RL_X").id
    membership_store.lock_segment_bulk(db_session, segment_id, (100_000, 104_999))
    membership_store.lock_segment_bulk(db_session, segment_id, (100_500, 101_000))  # covered: nothing
    membership_store.lock_segment_bulk(db_session, segment_id, (105_000, 109_999))  # next chunk: 26
    membership_store.lock_segment_bulk(db_session, segment_id, (1, 4_000))  # a first window: 0
    membership_store.lock_segment_bulk(db_session, segment_id, (1, 5_000_000))  # coarser: level 1, 0 … 1
    membership_store.lock_segment_bulk(db_session, segment_id, (200_000, 204_999))  # covered (level 1)
    # never a finer level after a coarser one: level 1's key 2 instead of level 0's 2197 … 2198
    membership_store.lock_segment_bulk(db_session, segment_id, (9_000_000, 9_004_999))

    def exclusive() -> int:
        return int(
            db_session.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND mode = 'ExclusiveLock'"
                )
            )
        )

    held = exclusive()
    assert held == 8  # BULK_LOCK_SPACE, level 0: 24, 25, 26, 0, level 1: 0, 1, 2 (WRITE_LOCK_SPACE: shared)
    membership_store.lock_segment_bulk(db_session, segment_id)  # the whole segment after ranges
    assert exclusive() == 9
