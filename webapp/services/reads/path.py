"""The hot read path: which segments is user N in now?

Exact by construction, with no cache to invalidate. Each process keeps the segment catalog
(live segments: id, slug, salt, rollout) in memory, labelled with the ``catalog_version`` it
was read under. One statement returns the user's own rows (explicit memberships by primary
key, rollout exclusions) *and* the current catalog version, from one snapshot. If the
version differs from the one in memory the catalog is reloaded (its version read in the same
statement as its rows) and the read repeats. Every transaction that changes the catalog
increments the version before it commits, so a read never combines a user's rows with an
older catalog than the one they were written against. Nothing on this path touches Redis.

The catalog also holds the scheduled rollout changes not yet applied: a read at ``now``
applies those due by then (``allocation.replay``, as the job that applies them will), so a
schedule is exact to the second whether or not any job has run, and nothing kept outlives
the next scheduled change. In an exclusion group an explicit membership wins: the group's
rollouts do not count for a user explicitly in one of its segments.

Reads inside a write transaction (a change's response) see that transaction's own rows and
catalog; a catalog read there is never kept, since the transaction may still roll back.

Requests read through one entry point, the app's :class:`Reader` (``app.extensions["reader"]``):
the layer in front of Flask (``webapp/http/hot_path.py``) and the Flask views alike call
``Reader.answer`` (one user), ``Reader.lookup_answer`` (the batch) or, for OpenFeature's
protocol, ``Reader.evaluate_flag`` and ``Reader.evaluate_flags`` (``services/reads/ofrep.py``), which
choose the server and connection, read, write the body and count the reads. Every one-user read
goes through ``Reader.view``: where a request's read is made is decided there once. ``create_app``
gives it the read engine's pool and, with ``DATABASE_REPLICA_URLS``, the replicas'
(``replicas.Replicas`` chooses among them by the read's ``Segments-Consistency`` token and
``REPLICA_READS``); the tests inject a :class:`ConnectionReader` on their rolled-back transaction.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import numpy as np
import psycopg
from psycopg import pq
from sqlalchemy import URL, Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from webapp.models.enums import Source
from webapp.models.membership import live
from webapp.services.common import DbSession, check_user_id, check_user_ids, utcnow
from webapp.services.reads import ofrep
from webapp.services.reads import rule as membership_rule
from webapp.services.reads.catalog import CATALOG, ActiveSegment, Catalog, Rollouts, load_catalog, objects
from webapp.services.reads.replicas import (
    POSITION,
    REPLAY,
    Behind,
    Read,
    Replicas,
    committed_position,
    format_token,
    parse_token,
)
from webapp.telemetry import read_counts

# Driver-level SQL (psycopg parameters): the hot path skips the ORM. Kinds: 0 explicit
# membership, 1 rollout exclusion, 2 the catalog version (always present), 3 a rule match (a
# segment in rule mode covers the user: issue 29; rows of segments not in rule mode are ignored).
USER_ROWS = """
SELECT 0, segment_id, expires_at FROM memberships WHERE user_id = %(user)s
UNION ALL SELECT 1, segment_id, NULL FROM rollout_exclusions WHERE user_id = %(user)s
UNION ALL SELECT 2, version, NULL FROM catalog_version
UNION ALL SELECT 3, segment_id, NULL FROM rule_matches WHERE user_id = %(user)s
"""
# USER_ROWS as the hot path sends it to libpq: prepared once per connection, binary in and out.
USER_ROWS_NAME = b"segments_user_rows_3"
USER_ROWS_LIBPQ = USER_ROWS.replace("%(user)s", "$1").encode()
INT8_OID, BINARY = 20, 1
UNDEFINED_STATEMENT, DUPLICATE_STATEMENT = b"26000", b"42P05"  # SQLSTATEs
# A replica's replay position (pg_lsn's binary form: 8 bytes), sent before a tokened read.
REPLAY_LIBPQ = b"SELECT pg_last_wal_replay_lsn()"
# Several users: their live memberships and exclusions as packed binary records (user int8,
# segment int4, expiry in timestamptz's binary form: microseconds since 2000-01-01, 'infinity'
# for none) that NumPy reads in one go, and the catalog version ("now" is the reader's clock,
# as in the single read's evaluation).
_RECORD = "int8send(user_id) || int4send(segment_id) || timestamptz_send({})"
USERS_ROWS = f"""
SELECT 0, string_agg({_RECORD.format("coalesce(expires_at, 'infinity')")}, '') FROM memberships
WHERE user_id = ANY(%(users)s::bigint[]) AND (expires_at IS NULL OR expires_at > %(now)s)
UNION ALL SELECT 1, string_agg({_RECORD.format("'infinity'::timestamptz")}, '') FROM rollout_exclusions
WHERE user_id = ANY(%(users)s::bigint[])
UNION ALL SELECT 2, int8send(version) FROM catalog_version
UNION ALL SELECT 3, string_agg({_RECORD.format("'infinity'::timestamptz")}, '') FROM rule_matches
WHERE user_id = ANY(%(users)s::bigint[])
"""
RECORD = np.dtype([("user", ">i8"), ("segment", ">i4"), ("until", ">i8")])
NEVER = np.iinfo(np.int64).max  # 'infinity': no expiry
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Every JSON body the app writes ends its line, as Flask's own JSON responses do (curl's output
# then never runs into the prompt; a log of bodies is one per line). Written in the same string.
LINE_END = "\n"
MAX_ATTEMPTS = 5  # a catalog that changes five times during one read is re-read that often


@dataclass(frozen=True)
class UserView:
    """A user's answer, with what a write path also needs: the catalog it was read with and
    (computed on demand) the live segments whose rollout covers the user now, whatever their
    explicit rows."""

    active: list[ActiveSegment]
    catalog: Catalog
    user_id: int
    now: datetime

    matched: frozenset[int] = frozenset()  # segments in rule mode whose rule_matches row the user has

    @cached_property
    def rollout_ids(self) -> set[int]:
        """The live segments covering the user now (their rollout, or in rule mode their rule
        match), whatever the user's explicit rows."""
        return {s.id for s in self.catalog.rollouts(self.now).covering(self.user_id)} | set(self.matched)


_lock = threading.Lock()
_kept: dict[tuple[Any, ...], Catalog] = {}  # per database (one app, or several in tests): see _database

T = TypeVar("T")


def active_segments(session: DbSession, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """Segments the user is in at ``now``, sorted by slug, as ``session`` sees them (its own
    uncommitted writes included; a catalog read here is never kept).

    Explicit memberships count until ``expires_at`` (exclusive) whether or not the purge has
    run; rollout segments count when the user's bucket is in the rollout in force at ``now``
    and the user was not explicitly removed from that segment (nor, in an exclusion group,
    is explicitly in another of its segments).
    """
    return user_view(session, user_id, now).active


def user_view(session: DbSession, user_id: int, now: datetime | None = None) -> UserView:
    """:func:`active_segments` with the rollouts covering the user and the catalog."""
    return _read_one(_ConnectionStatements(session.connection()), user_id, now, keep=False)


def lookup(session: DbSession, user_ids: Sequence[int], now: datetime | None = None) -> Batch:
    """:func:`active_segments` of several users at once, as ``session`` sees them."""
    return _read_many(_ConnectionStatements(session.connection()), user_ids, now, keep=False)


def hot_read(
    engine: Engine, user_id: int, now: datetime | None = None, check: int | None = None
) -> list[ActiveSegment]:
    """:func:`active_segments` of committed data for a request that writes nothing (see
    :func:`_on_hot_connection`; ``check``: a WAL position a replica must have replayed)."""
    return hot_view(engine, user_id, now, check).active


def hot_view(engine: Engine, user_id: int, now: datetime | None = None, check: int | None = None) -> UserView:
    """:func:`hot_read` with the catalog it was read with (which segments are live)."""
    return _on_hot_connection(
        engine, lambda statements: _read_one(statements, user_id, now, keep=True), check
    )


def hot_lookup(
    engine: Engine, user_ids: Sequence[int], now: datetime | None = None, check: int | None = None
) -> Batch:
    """:func:`hot_read` for several users at once: one statement, its results read by NumPy,
    and rollouts evaluated for all of them together as one matrix, computed while the
    database works on the statement."""
    return _on_hot_connection(
        engine, lambda statements: _read_many(statements, user_ids, now, keep=True), check
    )


class Reader:
    """The hot reads' one entry point, for every way a request comes in (the layer in front of
    Flask and the Flask views): the read on committed data through ``engine``'s pool
    (:func:`hot_read`, :func:`hot_lookup`), the answer's body, and one read counted for each
    segment in it (``telemetry.read_counts``: memory only). What reads where is this object's
    choice alone: ``create_app`` makes one on the read engine (``app.extensions["reader"]``),
    with the replicas if any (``replicas``: a read's ``token`` is the ``Segments-Consistency``
    header it sent); the tests put a :class:`ConnectionReader` in its place."""

    def __init__(self, engine: Engine, replicas: Replicas | None = None):
        self.engine, self.replicas = engine, replicas

    def view(self, user_id: int, now: datetime | None = None, token: str | None = None) -> UserView:
        """The one user's read: its answer and the catalog it was read with, on the server
        ``token`` allows (``replicas``)."""
        return self._route(lambda engine, check: hot_view(engine, user_id, now, check), token)

    def segments(
        self, user_id: int, now: datetime | None = None, token: str | None = None
    ) -> list[ActiveSegment]:
        return self.view(user_id, now, token).active

    def batch(self, user_ids: Sequence[int], now: datetime | None = None, token: str | None = None) -> Batch:
        return self._route(lambda engine, check: hot_lookup(engine, user_ids, now, check), token)

    def _route(self, read: Read[T], token: str | None) -> T:
        if self.replicas is None:
            return read(self.engine, None)
        return self.replicas.route(read, token)

    def token(self, session: DbSession) -> str:
        """The ``Segments-Consistency`` token of what is committed now: the primary's WAL
        position (``replicas.POSITION``), read on the read engine's pool (the primary's), as a
        hot read is: one round trip, where ``session`` (the request boundary's, after its commit)
        would cost four (its pool's pre-ping, BEGIN, the statement, the teardown's ROLLBACK)."""
        at = time.monotonic()
        rows = _on_hot_connection(self.engine, lambda statements: statements.run(POSITION, {}))
        return self._minted(at, str(rows[0][0]))

    def _minted(self, at: float, position: str) -> str:
        lsn = committed_position(position)
        if self.replicas is not None:
            self.replicas.minted(at, lsn)
        return format_token(lsn)

    def answer(self, user_id: int, *, compat: bool = False, token: str | None = None) -> bytes:
        """``GET /api/v1/users/<id>/segments``'s body (UserSegments), or with ``compat`` the
        seed's ``GET /segment/user?id=<id>`` (``{"user_id", "segments": [{"slug"}]}``, and no
        body at all — its 204 — for a user in no segment). Written straight to JSON from each
        entry's JSON, kept once made (the catalog's rollout entries are the same objects on
        every read). ``token``: the request's ``Segments-Consistency`` header, if any."""
        active = self.segments(user_id, token=token)
        read_counts.record(active)
        if not compat:
            return user_json(user_id, [a.json for a in active], LINE_END).encode()
        return user_json(user_id, [a.compat_json for a in active], LINE_END).encode() if active else b""

    def lookup_answer(self, user_ids: Sequence[int], token: str | None = None) -> bytes:
        """The batch lookup's body, ``{"users": [UserSegments, ...]}`` in the order asked; one
        read counted per segment of each answer."""
        batch = self.batch(user_ids, token=token)
        read_counts.record_counts(batch.read_counts())
        return batch.json().encode()

    def evaluate_flag(self, key: str, request_body: bytes, token: str | None = None) -> tuple[int, bytes]:
        """OFREP's single evaluation (``POST /ofrep/v1/evaluate/flags/{key}``, ``services.reads.ofrep``):
        its status and body, from the same read as :meth:`answer`'s. One read is counted for the
        segment asked, whatever its value (a segment evaluated is in use)."""
        user = ofrep.targeting_user(request_body)
        if isinstance(user, ofrep.Failure):
            return 400, user.body(key)
        view = self.view(user, token=token)
        status, body = ofrep.evaluation(key, view.catalog, view.active)
        if status == 200:
            read_counts.record_counts({key: 1})
        return status, body

    def evaluate_flags(self, request_body: bytes, token: str | None = None) -> tuple[int, bytes]:
        """OFREP's bulk evaluation (``POST /ofrep/v1/evaluate/flags``): every live segment with the
        user's value, from the same read as :meth:`answer`'s; reads counted as :meth:`answer`'s
        (one for each segment the user is in)."""
        user = ofrep.targeting_user(request_body)
        if isinstance(user, ofrep.Failure):
            return 400, user.body()
        view = self.view(user, token=token)
        read_counts.record(view.active)
        return 200, ofrep.bulk(view.catalog, view.active)


class ConnectionReader(Reader):
    """A :class:`Reader` on one connection, inside its transaction: it sees that transaction's
    uncommitted rows and keeps no catalog (the transaction may roll back). The tests' fixture
    ``db_session`` injects one on its rolled-back transaction, so requests take the same path
    as in production and read the test's rows."""

    def __init__(self, connection: Connection):
        self.connection, self.replicas = connection, None

    def view(self, user_id: int, now: datetime | None = None, token: str | None = None) -> UserView:
        return _read_one(_ConnectionStatements(self.connection), user_id, now, keep=False)

    def batch(self, user_ids: Sequence[int], now: datetime | None = None, token: str | None = None) -> Batch:
        return _read_many(_ConnectionStatements(self.connection), user_ids, now, keep=False)

    def token(self, session: DbSession) -> str:
        """The token read on ``session`` (the tests' connection: no read engine of its own)."""
        return self._minted(time.monotonic(), str(session.connection().exec_driver_sql(POSITION).scalar()))


def _database(url: URL) -> tuple[Any, ...]:
    """Which database ``url`` names, as the kept catalog's key (hashing a URL renders it as a
    string: 10 µs, on every read)."""
    return url.host, url.port, url.database, url.query.get("host")


def _on_hot_connection(engine: Engine, read: Callable[[_Statements], T], check: int | None = None) -> T:
    """``read`` straight on a pooled driver connection in autocommit mode (no ORM, no
    BEGIN/ROLLBACK, no pre-ping: a connection the server dropped is replaced and the read
    retried once). With ``check`` (a replica's read for a token) the read's first statement
    follows a statement asking how far the server has replayed, in the same round trip: if not
    as far as ``check``, :class:`~webapp.services.reads.replicas.Behind` (the read's rows unused)."""
    key = _database(engine.url)
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if not driver.autocommit:  # (the read engine connects in autocommit mode)
                driver.autocommit = True
            return read(_DriverStatements(connection, driver, key, check))
        except psycopg.OperationalError:
            connection.invalidate()
            if attempt == 2:
                raise
        finally:
            connection.close()  # back to the pool (or discarded, if invalidated)
    raise AssertionError("unreachable")


Rows = Sequence[Sequence[Any]]


class _Statements(Protocol):
    """The read's statements on one connection, and which database it is (the kept catalog's
    key). ``meanwhile`` (if given) runs while the database works on the statement."""

    key: tuple[Any, ...]

    def run(
        self, sql: str, params: dict[str, Any], meanwhile: Callable[[], object] | None = None
    ) -> Rows: ...

    def user_rows(self, user_id: int) -> Rows:
        """USER_ROWS of one user: (kind, segment id or version, expiry)."""


class _ConnectionStatements:
    """On a SQLAlchemy connection, a session's or the tests' (its transaction's own writes
    included)."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.key = _database(connection.engine.url)

    def run(self, sql: str, params: dict[str, Any], meanwhile: Callable[[], object] | None = None) -> Rows:
        rows = self.connection.exec_driver_sql(sql, params).all()
        if meanwhile is not None:
            meanwhile()
        return rows

    def user_rows(self, user_id: int) -> Rows:
        return self.run(USER_ROWS, {"user": user_id})


class _DriverStatements:
    """On a pooled psycopg connection in autocommit mode. The single read's statement goes to
    libpq directly, prepared once per connection: psycopg's execute machinery costs about as
    much CPU as the rest of that round trip (measured: 84–107 µs against 43–51 µs). With
    ``check``, the first statement is preceded by the replay check (see _on_hot_connection)."""

    def __init__(
        self,
        pooled: PoolProxiedConnection,
        driver: psycopg.Connection[Any],
        key: tuple[Any, ...],
        check: int | None = None,
    ):
        self.pooled, self.driver, self.key, self.check = pooled, driver, key, check

    def run(self, sql: str, params: dict[str, Any], meanwhile: Callable[[], object] | None = None) -> Rows:
        check, self.check = self.check, None
        with self.driver.cursor(binary=True) as cursor, self.driver.cursor() as probe:
            if meanwhile is None and check is None:
                cursor.execute(sql, params)
                return cursor.fetchall()
            with self.driver.pipeline():  # the statements are sent now, their rows fetched after meanwhile()
                if check is not None:
                    probe.execute(REPLAY)
                cursor.execute(sql, params)
                if meanwhile is not None:
                    meanwhile()
                rows = cursor.fetchall()
                if check is not None:
                    row = probe.fetchone()
                    _replayed_to(check, None if row is None or row[0] is None else parse_token(row[0]))
                return rows

    def user_rows(self, user_id: int) -> Rows:
        pgconn = self.driver.pgconn
        if not self.pooled.info.get(USER_ROWS_NAME):  # (the info lives and dies with the connection)
            self._prepare(pgconn)
        param = [user_id.to_bytes(8, "big")]
        check, self.check = self.check, None
        if check is not None:
            result = self._checked(pgconn, param, check)
        else:
            result = pgconn.exec_prepared(USER_ROWS_NAME, param, [BINARY], BINARY)
            if (
                _sqlstate(result) == UNDEFINED_STATEMENT
            ):  # deallocated behind our back (DEALLOCATE ALL, a pooler)
                self._prepare(pgconn)
                result = pgconn.exec_prepared(USER_ROWS_NAME, param, [BINARY], BINARY)
        _check(pgconn, result, pq.ExecStatus.TUPLES_OK)
        value = result.get_value
        return [
            (
                int.from_bytes(value(i, 0) or b"", "big"),
                int.from_bytes(value(i, 1) or b"", "big", signed=True),
                _timestamp(value(i, 2)),
            )
            for i in range(result.ntuples)
        ]

    def _checked(self, pgconn: pq.abc.PGconn, param: list[bytes], check: int) -> pq.abc.PGresult:
        """The replay check, then USER_ROWS, pipelined: one round trip, two statements (the
        read's snapshot taken after the check ran); Behind unless the check passed."""
        for attempt in (1, 2):
            pgconn.enter_pipeline_mode()
            try:
                pgconn.send_query_params(REPLAY_LIBPQ, None, result_format=BINARY)
                pgconn.send_query_prepared(USER_ROWS_NAME, param, [BINARY], BINARY)
                pgconn.pipeline_sync()
                replay, rows = _pipeline_results(pgconn, 2)
            finally:
                if pgconn.status == pq.ConnStatus.OK:
                    pgconn.exit_pipeline_mode()
            _check(pgconn, replay, pq.ExecStatus.TUPLES_OK)
            if _sqlstate(rows) == UNDEFINED_STATEMENT and attempt == 1:  # (as in user_rows)
                self._prepare(pgconn)
                continue
            value = replay.get_value(0, 0) if replay.ntuples else None
            _replayed_to(check, None if value is None else int.from_bytes(value, "big"))
            return rows
        raise AssertionError("unreachable")

    def _prepare(self, pgconn: pq.abc.PGconn) -> None:
        result = pgconn.prepare(USER_ROWS_NAME, USER_ROWS_LIBPQ, [INT8_OID])
        if _sqlstate(result) != DUPLICATE_STATEMENT:  # (already there: as good)
            _check(pgconn, result, pq.ExecStatus.COMMAND_OK)
        self.pooled.info[USER_ROWS_NAME] = True


def _pipeline_results(pgconn: pq.abc.PGconn, count: int) -> list[pq.abc.PGresult]:
    """The results of ``count`` statements sent in pipeline mode and the sync after them
    (read to the end, so the connection is ready for the next statement)."""
    results: list[pq.abc.PGresult] = []
    while True:
        result = pgconn.get_result()
        if result is None:
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError(
                    pgconn.get_error_message() or "the connection to the database was lost"
                )
            continue  # (the end of one statement's results)
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        results.append(result)
    if len(results) != count:
        raise psycopg.OperationalError(f"{len(results)} results in the pipeline, not {count}")
    return results


def _replayed_to(check: int, replayed: int | None) -> None:
    """Behind unless the server has replayed ``check`` (None: the server is not a replica)."""
    if replayed is None or replayed < check:
        raise Behind(replayed)


def _sqlstate(result: pq.abc.PGresult) -> bytes | None:
    return result.error_field(pq.DiagnosticField.SQLSTATE)


def _check(pgconn: pq.abc.PGconn, result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    """Raise what psycopg would for a failed libpq call: OperationalError once the connection
    is broken (the caller replaces it and reads again), else the server's error."""
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError(
            pgconn.get_error_message() or "the connection to the database was lost"
        )
    if result.status != expected:
        raise psycopg.errors.error_from_result(result)


def _timestamp(binary: bytes | None) -> datetime | None:
    """A timestamptz in binary form, or NULL."""
    return None if binary is None else _postgres_time(int.from_bytes(binary, "big", signed=True))


def _postgres_time(microseconds: int) -> datetime:
    """A timestamptz's binary value (microseconds since POSTGRES_EPOCH) as a datetime."""
    return POSTGRES_EPOCH + timedelta(microseconds=microseconds)


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


R = TypeVar("R", bound=_Versioned)


def _snapshot(statements: _Statements, read_users: Callable[[], R], *, keep: bool) -> tuple[Catalog, R]:
    """The users' rows (``read_users``) and a catalog of the same version (re-read as needed)."""
    key = statements.key
    catalog = _kept.get(key)
    for _ in range(MAX_ATTEMPTS):
        rows = read_users()
        if catalog is None or catalog.version != rows.version:
            catalog = load_catalog(statements.run(CATALOG, {}))
            if keep:
                with _lock:
                    _kept[key] = catalog
            if catalog.version != rows.version:
                continue  # the catalog moved on between the two statements: read the users again
        return catalog, rows
    raise RuntimeError("the segment catalog kept changing during one read")


def _read_one(statements: _Statements, user_id: int, now: datetime | None, *, keep: bool) -> UserView:
    check_user_id(user_id)
    at = now or utcnow()
    catalog, rows = _snapshot(statements, lambda: _UserRows.of(statements.user_rows(user_id), at), keep=keep)
    return _evaluate_one(catalog, rows, user_id, at)


def _read_many(
    statements: _Statements, user_ids: Sequence[int], now: datetime | None, *, keep: bool
) -> Batch:
    check_user_ids(user_ids)
    at = now or utcnow()
    unique = list(dict.fromkeys(user_ids))
    # (the ids as one array literal: psycopg dumps a text value faster than a list of ints)
    params = {"users": "{" + ",".join(map(str, unique)) + "}", "now": at}
    early: list[tuple[Rollouts, np.ndarray]] = []

    def meanwhile() -> None:
        """The rollout matrix under the catalog in memory, while the statement runs (used if
        the statement finds that catalog current, as it nearly always does)."""
        if (kept := _kept.get(statements.key)) is not None:
            rollouts = kept.rollouts(at)
            early.append((rollouts, rollouts.matrix(unique)))

    catalog, rows = _snapshot(
        statements, lambda: _Records.of(statements.run(USERS_ROWS, params, meanwhile)), keep=keep
    )
    rollouts = catalog.rollouts(at)
    covered = early[-1][1] if early and early[-1][0] is rollouts else rollouts.matrix(unique)
    return _evaluate(catalog, rows, rollouts, covered, user_ids, unique)


@dataclass(frozen=True)
class _UserRows:
    """One user's live memberships and exclusions (USER_ROWS), and the catalog version."""

    version: int
    segments: list[int]
    expiries: list[datetime | None]
    excluded_segments: list[int]
    matched: list[int]  # segments with a rule_matches row of the user (in rule mode or not)

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]], now: datetime) -> _UserRows:
        members = [(sid, at) for kind, sid, at in rows if kind == 0 and live(at, now)]
        return cls(
            next(sid for kind, sid, _ in rows if kind == 2),
            [sid for sid, _ in members],
            [at for _, at in members],
            [sid for kind, sid, _ in rows if kind == 1],
            [sid for kind, sid, _ in rows if kind == 3],
        )


@dataclass(frozen=True)
class _Records:
    """Several users' live memberships and exclusions (USERS_ROWS) as arrays, and the catalog
    version."""

    version: int
    users: np.ndarray
    segments: np.ndarray
    until: np.ndarray  # microseconds since POSTGRES_EPOCH, NEVER for no expiry
    excluded_users: np.ndarray
    excluded_segments: np.ndarray
    matched_users: np.ndarray
    matched_segments: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]]) -> _Records:
        data = {kind: value for kind, value in rows}
        members, excluded, matched = (np.frombuffer(data.get(kind) or b"", RECORD) for kind in (0, 1, 3))
        return cls(
            int.from_bytes(data[2], "big", signed=True),
            members["user"].astype(np.int64),
            members["segment"].astype(np.intp),
            members["until"].astype(np.int64),
            excluded["user"].astype(np.int64),
            excluded["segment"].astype(np.intp),
            matched["user"].astype(np.int64),
            matched["segment"].astype(np.intp),
        )


@dataclass(frozen=True)
class Batch:
    """Several users' answers as one list sorted by user, then slug: user ``unique[i]``'s
    entries are ``entries[bounds[i]:bounds[i + 1]]``. Answers follow the ids asked (a
    repeated id is answered again)."""

    asked: Sequence[int]
    unique: list[int]
    bounds: list[int]
    texts: list[str]  # each entry's JSON
    ranks: np.ndarray  # each entry's segment rank
    slugs: np.ndarray  # rank -> slug
    unsorted: np.ndarray  # the entries (object array) before ``order``: the API writes only texts
    order: np.ndarray

    @cached_property
    def entries(self) -> list[ActiveSegment]:
        entries: list[ActiveSegment] = self.unsorted[self.order].tolist()
        return entries

    def _spans(self) -> Iterator[tuple[int, int, int]]:
        """(user id, first entry, end) of each answer, in the order asked."""
        bounds = self.bounds
        if len(self.unique) == len(self.asked):
            return ((u, bounds[i], bounds[i + 1]) for i, u in enumerate(self.unique))
        position = {u: i for i, u in enumerate(self.unique)}
        return ((u, bounds[position[u]], bounds[position[u] + 1]) for u in self.asked)

    def answers(self) -> list[list[ActiveSegment]]:
        return [self.entries[first:end] for _, first, end in self._spans()]

    def json(self) -> str:
        """``{"users": [UserSegments, ...]}`` as the API writes it (ending its line)."""
        return (
            '{"users":['
            + ",".join(user_json(u, self.texts[first:end]) for u, first, end in self._spans())
            + "]}"
            + LINE_END
        )

    def read_counts(self) -> dict[str, int]:
        """Reads per slug: one for each answer that holds it."""
        weights = None
        if len(self.unique) != len(self.asked):
            asked = Counter(self.asked)
            weights = np.repeat([asked[u] for u in self.unique], np.diff(self.bounds))
        counts = np.bincount(self.ranks, weights, minlength=len(self.slugs))
        return {self.slugs[rank]: int(counts[rank]) for rank in np.flatnonzero(counts).tolist()}


def user_json(user_id: int, items: Iterable[str], end: str = "") -> str:
    """One user's answer as the API writes it, from its entries' JSON; ``end`` follows it (the
    body's LINE_END), in the same one string."""
    return f'{{"user_id":{user_id},"segments":[{",".join(items)}]}}{end}'


def _evaluate(
    catalog: Catalog,
    rows: _Records,
    rollouts: Rollouts,
    covered: np.ndarray,
    asked: Sequence[int],
    unique: list[int],
) -> Batch:
    """Each user's answer: live explicit rows, and the rollouts covering each user (``covered``:
    the users x columns matrix of ``rollouts``, changed here) minus those an explicit row, an
    exclusion or, in a group, an explicit membership of another of the group's segments
    overrides; sorted by slug, all users at once."""
    lookup = catalog.lookup
    by_id = np.asarray(unique, dtype=np.int64)
    id_order = np.argsort(by_id)
    sorted_ids = by_id[id_order]

    def positions(ids: np.ndarray) -> np.ndarray:
        """Each id's index in ``unique`` (every id is one of them)."""
        return id_order[np.searchsorted(sorted_ids, ids)]

    # explicit memberships of live segments (one per group per user): (position, segment rank)
    member_at, member_rank = positions(rows.users), lookup.index(rows.segments)
    keep = member_rank >= 0
    if catalog.group_of:
        keep[keep] = _one_per_group(member_at[keep], member_rank[keep], lookup.group[member_rank[keep]])
    member_at, member_rank, until = member_at[keep], member_rank[keep], rows.until[keep]
    if len(rows.matched_users) and catalog.rule_ids:  # rule matches: the rule columns' cells
        matched_rank = lookup.index(rows.matched_segments)
        live_rows = matched_rank >= 0
        columns = np.full(len(matched_rank), -1, dtype=np.intp)
        columns[live_rows] = rollouts.column_by_index[matched_rank[live_rows]]
        rule_column = np.zeros(len(columns), dtype=bool)
        rule_column[live_rows] = [
            catalog.segments[int(sid)].rule_mode for sid in rows.matched_segments[live_rows].tolist()
        ]
        hit = rule_column & (columns >= 0)
        covered[positions(rows.matched_users[hit]), columns[hit]] = True
    excluded_at, excluded_rank = positions(rows.excluded_users), lookup.index(rows.excluded_segments)
    # Covered cells an explicit row or an exclusion overrides, and groups an explicit member holds.
    for at, of in ((member_at, member_rank), (excluded_at, excluded_rank)):
        live_rows = of >= 0
        columns = rollouts.column_by_index[of[live_rows]]
        hit = columns >= 0
        covered[at[live_rows][hit], columns[hit]] = False
    for group, group_columns in rollouts.group_columns.items():
        holders = member_at[lookup.group[member_rank] == group]
        if len(holders):
            covered[np.ix_(np.unique(holders), group_columns)] = False
    explicit, explicit_json = lookup.explicit[member_rank], lookup.explicit_json[member_rank]
    for i in np.flatnonzero(until != NEVER).tolist():
        entry = ActiveSegment(explicit[i].slug, Source.EXPLICIT, _postgres_time(int(until[i])))
        explicit[i], explicit_json[i] = entry, entry.json
    hit_at, hit_columns = np.divmod(np.flatnonzero(covered), max(covered.shape[1], 1))  # (row-major: by user)
    users, ranks = [member_at, hit_at], [member_rank, rollouts.column_rank[hit_columns]]
    entries, texts = (
        [explicit, rollouts.column_entry[hit_columns]],
        [explicit_json, rollouts.column_json[hit_columns]],
    )
    if rollouts.scheme1:  # segments hashed the old way: evaluated one user at a time
        overridden = set(zip(member_at.tolist(), member_rank.tolist(), strict=True)) | set(
            zip(excluded_at.tolist(), excluded_rank.tolist(), strict=True)
        )
        extra = [
            (at, segment)
            for at, user_id in enumerate(unique)
            for segment in rollouts.scheme1_covering(user_id)
            if (at, segment.rank) not in overridden and segment.id not in catalog.group_of
        ]
        users.append(np.array([at for at, _ in extra], dtype=np.intp))
        ranks.append(np.array([s.rank for _, s in extra], dtype=np.intp))
        entries.append(objects([s.rollout for _, s in extra]))
        texts.append(objects([s.rollout.json for _, s in extra]))
    user_at, rank = np.concatenate(users), np.concatenate(ranks)
    order = np.argsort(user_at * len(lookup.slug) + rank, kind="stable")  # (two sorted runs, mostly)
    bounds = np.searchsorted(user_at[order], np.arange(len(unique) + 1)).tolist()
    return Batch(
        asked,
        unique,
        bounds,
        np.concatenate(texts)[order].tolist(),
        rank[order],
        lookup.slug,
        np.concatenate(entries),
        order,
    )


def _one_per_group(users: np.ndarray, ranks: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Which explicit rows to keep: in an exclusion group, a user's first segment by slug.
    (Writes refuse a second one; this keeps a read exact should two writers ever race.)"""
    keep = np.ones(len(users), dtype=bool)
    grouped = np.flatnonzero(np.fromiter((g is not None for g in groups), dtype=bool, count=len(groups)))
    seen: set[tuple[int, str]] = set()
    for i in grouped[np.lexsort((ranks[grouped], users[grouped]))].tolist():
        key = (int(users[i]), groups[i])
        keep[i] = key not in seen
        seen.add(key)
    return keep


def _evaluate_one(catalog: Catalog, rows: _UserRows, user_id: int, now: datetime) -> UserView:
    """:func:`_evaluate` for one user: :func:`membership_rule.members` over the user's rows and
    the rollouts covering them (what a single read costs most is fixed overhead, which the
    arrays of the batch would add)."""
    segments = catalog.segments
    until = {sid: at for sid, at in zip(rows.segments, rows.expiries, strict=True) if sid in segments}
    covering = [s.id for s in catalog.rollouts(now).covering(user_id)]
    matched = (
        frozenset(sid for sid in rows.matched if sid in catalog.rule_ids) if rows.matched else frozenset()
    )
    if matched:
        covering += sorted(matched, key=lambda sid: segments[sid].rank)
    found: list[tuple[int, ActiveSegment]] = []
    for sid in membership_rule.members(
        until, rows.excluded_segments, covering, catalog.group_of, rank=lambda sid: segments[sid].rank
    ):
        segment = segments[sid]
        if sid not in until:
            found.append((segment.rank, segment.rollout))
        elif (expires := until[sid]) is None:
            found.append((segment.rank, segment.explicit))
        else:
            found.append((segment.rank, ActiveSegment(segment.slug, Source.EXPLICIT, expires)))
    found.sort(key=itemgetter(0))
    return UserView([entry for _, entry in found], catalog, user_id, now, matched)
