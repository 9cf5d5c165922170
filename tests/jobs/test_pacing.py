"""Others' turn between a background loop's chunks: BULK_PAUSE_MS and BULK_PAUSE_RATIO
(webapp.jobs.tasks.Pacing), and that the bulk operations and the purge take it after every
committed chunk."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from webapp.jobs.tasks import Pacing, purge_expired, run_bulk_operation
from webapp.models import BulkOperation
from webapp.models.enums import OperationKind
from webapp.services.membership import bulk, rules
from webapp.services.segments import rollout_state
from webapp.services.segments.lifecycle import create_segment


def test_a_ratio_pauses_in_proportion_to_the_chunk_just_done():
    before = time.perf_counter()
    pacing = Pacing(fixed=0.0, ratio=2.0)
    time.sleep(0.05)  # (the chunk)
    resting = time.perf_counter()
    pause = pacing.rest()
    rested = time.perf_counter() - resting
    # the chunk as pacing timed it: from after `before` to just after `resting` (1 ms for that)
    assert 2 * 0.05 <= pause <= 2 * (resting - before + 0.001)
    assert rested >= pause
    # the next chunk is timed from the end of the rest, not from the first chunk's start
    assert pacing.rest() < pause / 2


def test_the_fixed_pause_is_the_least_and_nothing_configured_is_no_pause():
    assert Pacing(fixed=0.03, ratio=0.1).rest() == 0.03  # (a chunk of no time: the fixed pause)
    resting = time.perf_counter()
    assert Pacing(fixed=0.0, ratio=0.0).rest() == 0
    assert Pacing(fixed=-1.0, ratio=-1.0).rest() == 0  # (nonsense settings: no pause, no error)
    assert time.perf_counter() - resting < 0.03  # (no rest at all: 0.03 s is the pause above)


def _rests(monkeypatch) -> list[float]:
    """The pauses every Pacing takes from now on (the real rests, recorded)."""
    taken: list[float] = []
    original = Pacing.rest

    def rest(self: Pacing) -> float:
        taken.append(original(self))
        return taken[-1]

    monkeypatch.setattr(Pacing, "rest", rest)
    return taken


def test_a_bulk_operation_rests_after_every_chunk_by_the_configured_ratio(app, committed_db, monkeypatch):
    monkeypatch.setattr(bulk, "enqueue_after_commit", lambda *args, **kwargs: None)  # (run here instead)
    monkeypatch.setitem(app.config, "BULK_CHUNK", 10_000)
    monkeypatch.setitem(app.config, "BULK_PAUSE_RATIO", 0.5)
    create_segment(committed_db, "PACED")
    committed_db.commit()
    operation = bulk.bulk_add(committed_db, "PACED", list(range(1, 30_001)))
    assert isinstance(operation, BulkOperation)
    committed_db.commit()
    taken = _rests(monkeypatch)
    assert run_bulk_operation(str(operation.id)) == 30_000
    # a rest after each committed chunk (three of 10,000; the fourth call finds none left)
    assert len(taken) == 3 and all(pause > 0 for pause in taken)
    assert committed_db.scalar(sa.text("SELECT count(*) FROM memberships")) == 30_000


def test_the_purge_rests_after_every_batch_by_the_fixed_pause(app, committed_db, monkeypatch):
    monkeypatch.setitem(app.config, "BULK_PAUSE_MS", 20)
    monkeypatch.setitem(app.config, "BULK_PAUSE_RATIO", 0.0)  # (the fixed pause alone)
    segment = create_segment(committed_db, "PACED_TTL")
    committed_db.commit()
    now = datetime.now(UTC)
    expired = "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) SELECT g, :s, :at, :at FROM generate_series(1, 2500) g"
    committed_db.execute(sa.text(expired), {"s": segment.id, "at": now - timedelta(days=1)})
    committed_db.commit()
    taken = _rests(monkeypatch)
    assert purge_expired(now=now, batch_size=1_000) == 2_500
    assert taken == [0.02, 0.02, 0.02]  # (after the batches of 1,000, 1,000 and 500; the empty one ends it)


def test_a_re_evaluation_runs_unpaced_whatever_the_settings(app, committed_db, monkeypatch):
    """The pacing is the membership operations' and the purge's: a re-evaluation (its own chunks)
    takes no pause even with both settings up."""
    monkeypatch.setattr(rollout_state, "enqueue_after_commit", lambda *args, **kwargs: None)  # (run here)
    monkeypatch.setattr(rules, "CHUNK", 2)
    monkeypatch.setitem(app.config, "BULK_PAUSE_MS", 500)
    monkeypatch.setitem(app.config, "BULK_PAUSE_RATIO", 5.0)
    http = app.test_client()
    for user in range(1, 6):
        assert http.put(f"/api/v1/users/{user}/traits", json={"traits": {"plan": "paid"}}).status_code == 200
    paid = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]
    assert http.post("/api/v1/segments", json={"slug": "UNPACED", "rules": paid}).status_code == 201
    operation = committed_db.scalars(
        sa.select(BulkOperation).where(BulkOperation.kind == OperationKind.REEVALUATE_RULES)
    ).one()
    committed_db.rollback()
    taken = _rests(monkeypatch)
    run_bulk_operation(str(operation.id))
    assert len(taken) >= 2 and set(taken) == {0}  # (chunks of 2 users over 5: rested, for no time)
    assert http.get("/api/v1/users/5/segments").get_json()["segments"][0]["slug"] == "UNPACED"
