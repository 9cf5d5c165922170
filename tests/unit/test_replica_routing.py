"""The replica routing rules (webapp/services/reads/replicas.py) with stand-in reads: the wait bound,
the caps on waiters and fallbacks, unreachable replicas skipped then tried again, staleness by
WAL position. tests/api/test_replicas.py drives the same code against a real replica."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from webapp.errors import ReplicasBehind
from webapp.services.reads import replicas as module
from webapp.services.reads.replicas import (
    Behind,
    Positions,
    Replicas,
    ReplicaSettings,
    format_token,
    record_end,
)


def engine(host: str) -> sa.Engine:
    return sa.create_engine(f"postgresql+psycopg://u@{host}:5432/db")  # (never connects here)


PRIMARY, REPLICA = engine("primary"), engine("replica")


def router(**settings: object) -> Replicas:
    return Replicas(PRIMARY, [REPLICA], ReplicaSettings(**{"mode": "bounded", **settings}))


class Server:
    """A stand-in read: the replica has replayed ``replayed`` (raising Behind short of a token)."""

    def __init__(self, replayed: int = 100, fail: Exception | None = None):
        self.replayed, self.fail, self.calls = replayed, fail, []

    def __call__(self, engine: sa.Engine, check: int | None) -> str:
        self.calls.append((engine.url.host, check))
        if engine is REPLICA:
            if self.fail is not None:
                raise self.fail
            if check is not None and self.replayed < check:
                raise Behind(self.replayed)
        return engine.url.host


def test_tokens_read_and_write_as_postgresql_prints_a_pg_lsn():
    assert module.parse_token("16/B374D848") == 0x16B374D848
    assert format_token(0x16B374D848) == "16/B374D848"
    assert module.parse_token(" 0/0 ") == 0


def test_a_position_past_a_page_header_is_the_pages_end():
    assert record_end(3 * 8192 + 24) == 3 * 8192
    assert record_end(16 * 1024 * 1024 + 40) == 16 * 1024 * 1024
    assert record_end(3 * 8192 + 64) == 3 * 8192 + 64


def test_a_replica_that_has_replayed_the_token_serves_the_read():
    replicas, read = router(), Server(replayed=100)
    assert replicas.route(read, format_token(100)) == "replica"
    assert read.calls == [("replica", 100)]
    assert replicas.counts == {("replica", "token"): 1}


def test_a_replica_behind_is_asked_again_within_the_wait_then_the_primary_reads():
    replicas, read = router(wait=0.02), Server(replayed=99)
    started = time.monotonic()
    assert replicas.route(read, format_token(100)) == "primary"
    assert time.monotonic() - started >= 0.02
    assert len([c for c in read.calls if c[0] == "replica"]) > 2  # asked again while waiting
    assert replicas.counts == {("primary", "behind"): 1}


def test_a_replica_catching_up_within_the_wait_serves_the_read():
    replicas = router(wait=0.5)
    read = Server(replayed=99)
    threading.Timer(0.01, lambda: setattr(read, "replayed", 100)).start()
    assert replicas.route(read, format_token(100)) == "replica"
    assert replicas.counts == {("replica", "token"): 1}


def test_no_waiting_past_the_cap_on_waiters():
    replicas, read = router(wait=1.0, max_waiters=1), Server(replayed=99)
    assert replicas._waiters.acquire(blocking=False)  # another read waits already
    started = time.monotonic()
    assert replicas.route(read, format_token(100)) == "primary"
    assert time.monotonic() - started < 0.5
    assert [c[0] for c in read.calls] == ["replica", "primary"]


def test_past_the_cap_on_fallbacks_a_read_waits_for_a_slot_then_answers_503(monkeypatch):
    monkeypatch.setattr(module, "FALLBACK_QUEUE_SECONDS", 0.05)
    replicas, read = router(wait=0, max_fallbacks=1), Server(replayed=99)
    assert replicas._fallbacks.acquire(blocking=False)  # one read on the primary already
    with pytest.raises(ReplicasBehind):
        replicas.route(read, format_token(100))
    replicas._fallbacks.release()
    assert replicas.route(read, format_token(100)) == "primary"


def test_an_unreachable_replica_is_skipped_for_the_retry_time_then_tried_again():
    replicas = router(retry=0.1, max_fallbacks=1)
    read = Server(fail=sa.exc.OperationalError("connect", {}, Exception("refused")))
    assert replicas._fallbacks.acquire(blocking=False)  # (the cap does not hold back these reads)
    assert replicas.route(read, format_token(1)) == "primary"
    assert replicas.route(read, format_token(1)) == "primary"
    assert [c[0] for c in read.calls] == ["replica", "primary", "primary"]  # skipped the second time
    assert replicas.counts == {("primary", "unreachable"): 2}
    read.fail = None
    time.sleep(0.1)
    assert replicas.route(read, format_token(1)) == "replica"  # rejoined


def test_a_statement_failing_on_the_replica_reads_elsewhere_without_marking_it_down():
    replicas = router()
    read = Server(fail=sa.exc.DBAPIError("SELECT", {}, Exception("conflict with recovery")))
    assert replicas.route(read, format_token(1)) == "primary"
    assert replicas.replicas[0].up(time.monotonic())


def test_exact_mode_reads_token_less_reads_on_the_primary_only():
    replicas, read = router(mode="exact"), Server()
    assert replicas.route(read, None) == "primary"
    assert read.calls == [("primary", None)]


def test_a_primary_position_sample_bounds_what_a_replica_can_miss():
    positions = Positions()
    positions.add(10.0, 100)
    positions.add(11.0, 200)
    assert positions.held_at(150) == 10.0  # everything committed before 10.0 is at or before 100
    assert positions.held_at(200) == 11.0
    assert positions.held_at(99) is None  # unknown: older than every sample


def test_bounded_mode_measures_lag_by_wal_position_not_by_time_since_a_write(monkeypatch):
    """An idle primary: its position does not move, the replica has it all, and the replica
    stays fresh however long ago the last write was; a primary ahead of the replica by more than
    the bound makes it stale."""
    primary_at, replayed = [500], [500]
    monkeypatch.setattr(module, "primary_position", lambda engine: primary_at[0])
    monkeypatch.setattr(module, "scalar", lambda engine, sql: format_token(replayed[0]))
    replicas, read = router(max_lag=0.08), Server()
    assert replicas.route(read, None) == "replica"
    time.sleep(0.1)  # idle: nothing written, the estimate refreshed
    assert replicas.route(read, None) == "replica"
    primary_at[0] = 900  # writes the replica has not replayed: it may miss all since the last sample
    time.sleep(0.1)
    assert replicas.route(read, None) == "primary"
    assert replicas.counts[("primary", "lagging")] == 1
    replayed[0] = 900
    time.sleep(0.03)  # (asked again a quarter of the bound later)
    assert replicas.route(read, None) == "replica"


@pytest.mark.parametrize("mode", ["", "fast", "EXACTLY"])
def test_a_mode_not_exact_or_bounded_refuses_to_start(mode):
    with pytest.raises(RuntimeError, match="REPLICA_READS"):
        ReplicaSettings.of({"REPLICA_READS": mode})
