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
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import URL, Engine

from webapp.models.enums import Source
from webapp.models.membership import live
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.services import rollout
from webapp.services.allocation import RolloutState, replay
from webapp.services.common import DbSession, check_user_id, utcnow

# Driver-level SQL (psycopg parameters): the hot path skips the ORM. Kinds: 0 explicit
# membership, 1 rollout exclusion, 2 the catalog version (always present).
USER_ROWS = """
SELECT 0, segment_id, expires_at FROM memberships WHERE user_id = %(user)s
UNION ALL SELECT 1, segment_id, NULL FROM rollout_exclusions WHERE user_id = %(user)s
UNION ALL SELECT 2, version, NULL FROM catalog_version
"""
USERS_ROWS = """
SELECT 0, user_id, segment_id, expires_at FROM memberships WHERE user_id = ANY(%(users)s)
UNION ALL SELECT 1, user_id, segment_id, NULL FROM rollout_exclusions WHERE user_id = ANY(%(users)s)
UNION ALL SELECT 2, 0, version, NULL FROM catalog_version
"""
# Live segments (kind 0, with the version: at least one row) and pending scheduled changes
# of live segments (kind 1), from one snapshot.
CATALOG = f"""
SELECT 0, v.version, s.id, s.slug, s.salt, s.rollout_basis_points, s.hash_scheme, s.exclusion_group,
       g.salt, s.bucket_ranges, NULL::timestamptz
FROM catalog_version v LEFT JOIN segments s ON s.{LIVE_SEGMENT_SQL}
LEFT JOIN exclusion_groups g ON g.name = s.exclusion_group
UNION ALL
SELECT 1, r.id, r.segment_id, NULL, NULL, r.rollout_basis_points, NULL, NULL, NULL, NULL, r.at
FROM rollout_schedule r JOIN segments s ON s.id = r.segment_id AND s.{LIVE_SEGMENT_SQL}
WHERE r.applied_at IS NULL AND r.cancelled_at IS NULL
"""
MAX_ATTEMPTS = 5  # a catalog that changes five times during one read is re-read that often


@dataclass(frozen=True)
class ActiveSegment:
    slug: str
    source: Source
    expires_at: datetime | None


@dataclass(frozen=True)
class UserView:
    """A user's answer, with what a write path also needs: the live segments whose rollout
    covers the user now (whatever their explicit rows) and the catalog it was read with."""

    active: list[ActiveSegment]
    rollout_ids: set[int]
    catalog: Catalog


@dataclass(frozen=True)
class CatalogSegment:
    id: int
    slug: str
    salt: str
    hash_scheme: int
    group_salt: str | None
    state: RolloutState


@dataclass(frozen=True)
class Rollouts:
    """Every live rollout at one moment, ready to evaluate: scheme 1 as (item, prefix, bp)
    triples, scheme 2 (and groups) as arrays of (key, bucket range, segment) rows."""

    scheme1: tuple[tuple[tuple[int, ActiveSegment], Any, int], ...]
    keys: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    items: tuple[tuple[int, ActiveSegment], ...]

    def covering(self, user_id: int) -> list[tuple[int, ActiveSegment]]:
        found = list(rollout.covering(self.scheme1, user_id))
        if len(self.keys):
            buckets = rollout.mix_buckets(self.keys ^ np.uint64(rollout.user_hash(user_id)))
            found += [self.items[i] for i in np.flatnonzero((buckets >= self.starts) & (buckets < self.ends))]
        return found

    def covering_many(self, user_ids: Sequence[int]) -> list[list[tuple[int, ActiveSegment]]]:
        found: list[list[tuple[int, ActiveSegment]]] = [list(rollout.covering(self.scheme1, u)) for u in user_ids]
        if len(self.keys) and len(user_ids):
            buckets = rollout.mix_buckets(rollout.user_hashes(user_ids)[:, None] ^ self.keys[None, :])
            users, rows = np.nonzero((buckets >= self.starts) & (buckets < self.ends))
            items = self.items
            for user, row in zip(users.tolist(), rows.tolist(), strict=True):
                found[user].append(items[row])
        return found


@dataclass(frozen=True)
class Catalog:
    version: int
    segments: dict[int, CatalogSegment]
    group_of: dict[int, str]  # live segment id -> its exclusion group
    pending: tuple[tuple[datetime, int, int, int], ...]  # (at, schedule id, segment id, bp), in order
    _at: dict[int, Rollouts] = field(default_factory=dict, compare=False)  # by number of due changes

    def rollouts(self, now: datetime) -> Rollouts:
        """The rollouts in force at ``now`` (scheduled changes up to ``now`` applied)."""
        due = bisect_right(self.pending, (now, 2**63))
        compiled = self._at.get(due)
        if compiled is None:
            states = {sid: s.state for sid, s in self.segments.items()}
            states = replay(states, [(sid, bp) for _, _, sid, bp in self.pending[:due]])
            compiled = self._at[due] = _compile(self.segments, states)
        return compiled


def _compile(segments: dict[int, CatalogSegment], states: dict[int, RolloutState]) -> Rollouts:
    scheme1, rows = [], []
    for sid, segment in segments.items():
        state = states[sid]
        item = (sid, ActiveSegment(segment.slug, Source.ROLLOUT, None))
        if segment.group_salt is not None and state.group is not None:
            rows += [(rollout.key(segment.group_salt), start, end, item) for start, end in state.ranges]
        elif state.basis_points > 0 and segment.hash_scheme == 1:
            scheme1.append((item, rollout.prefix(segment.salt), state.basis_points))
        elif state.basis_points > 0:
            rows.append((rollout.key(segment.salt), 0, state.basis_points, item))
    return Rollouts(tuple(scheme1), np.array([r[0] for r in rows], dtype=np.uint64),
                    np.array([r[1] for r in rows], dtype=np.uint64), np.array([r[2] for r in rows], dtype=np.uint64),
                    tuple(r[3] for r in rows))


_lock = threading.Lock()
_kept: dict[URL, Catalog] = {}  # per database (one app, or several in tests)


Execute = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]


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
    connection = session.connection()
    return _read(lambda sql, params: connection.exec_driver_sql(sql, params).all(),
                 connection.engine.url, [user_id], now, keep=False)[0]


def hot_read(engine: Engine, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """:func:`active_segments` of committed data for a request that writes nothing: straight
    on a pooled driver connection in autocommit mode (no ORM, no BEGIN/ROLLBACK, no pre-ping:
    a connection the server dropped is replaced and the read retried once)."""
    return hot_read_many(engine, [user_id], now)[0]


def hot_read_many(engine: Engine, user_ids: Sequence[int], now: datetime | None = None) -> list[list[ActiveSegment]]:
    """:func:`hot_read` for several users at once: one statement, rollouts evaluated for all
    of them together. Answers in the order of ``user_ids``."""
    return [view.active for view in _hot_views(engine, user_ids, now)]


def _hot_views(engine: Engine, user_ids: Sequence[int], now: datetime | None) -> list[UserView]:
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if not driver.autocommit:  # (the read engine connects in autocommit mode)
                driver.autocommit = True
            return _read(_executor(driver), engine.url, user_ids, now, keep=True)
        except psycopg.OperationalError:
            connection.invalidate()
            if attempt == 2:
                raise
        finally:
            connection.close()  # back to the pool (or discarded, if invalidated)
    raise AssertionError("unreachable")


def _executor(driver: psycopg.Connection[Any]) -> Execute:
    def execute(sql: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        with driver.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    return execute


def _read(execute: Execute, key: URL, user_ids: Sequence[int], now: datetime | None, *,
          keep: bool) -> list[UserView]:
    for user_id in user_ids:
        check_user_id(user_id)
    now = now or utcnow()
    catalog = _kept.get(key)
    single = len(user_ids) == 1
    for _ in range(MAX_ATTEMPTS):
        if single:
            rows: Sequence[Sequence[Any]] = [(kind, user_ids[0], sid, at) for kind, sid, at in
                                             execute(USER_ROWS, {"user": user_ids[0]})]
        else:
            rows = execute(USERS_ROWS, {"users": list(user_ids)})
        version = next(sid for kind, _, sid, _ in rows if kind == 2)
        if catalog is None or catalog.version != version:
            catalog = _catalog(execute(CATALOG, {}))
            if keep:
                with _lock:
                    _kept[key] = catalog
            if catalog.version != version:
                continue  # the catalog moved on between the two statements: read the users again
        return _evaluate(catalog, rows, user_ids, now)
    raise RuntimeError("the segment catalog kept changing during one read")


def _catalog(rows: Sequence[Sequence[Any]]) -> Catalog:
    """Rows of CATALOG (at least one: the version, with NULLs when no segment is live)."""
    segments: dict[int, CatalogSegment] = {}
    pending = []
    for kind, first, sid, slug, salt, bp, scheme, group, group_salt, ranges, at in rows:
        if kind == 1:
            pending.append((at, first, sid, bp))
        elif sid is not None:
            state = RolloutState(bp, group, rollout.ranges_of(ranges, bp) if group else ())
            segments[sid] = CatalogSegment(sid, slug, salt, scheme, group_salt, state)
    version = next(row[1] for row in rows if row[0] == 0)
    group_of = {sid: s.state.group for sid, s in segments.items() if s.state.group is not None}
    return Catalog(version, segments, group_of, tuple(sorted(pending)))


def _evaluate(catalog: Catalog, rows: Sequence[Sequence[Any]], user_ids: Sequence[int],
              now: datetime) -> list[UserView]:
    explicit: dict[int, dict[int, datetime | None]] = {u: {} for u in user_ids}
    excluded: dict[int, set[int]] = {u: set() for u in user_ids}
    segments = catalog.segments
    for kind, user_id, sid, expires_at in rows:
        if kind == 0 and sid in segments and live(expires_at, now):
            explicit[user_id][sid] = expires_at
        elif kind == 1:
            excluded[user_id].add(sid)
    rollouts = catalog.rollouts(now)
    covered = [rollouts.covering(user_ids[0])] if len(user_ids) == 1 else rollouts.covering_many(user_ids)
    answers = []
    for user_id, hits in zip(user_ids, covered, strict=True):
        mine = explicit[user_id]
        groups = {catalog.group_of[sid] for sid in mine if sid in catalog.group_of}
        found = [ActiveSegment(segments[sid].slug, Source.EXPLICIT, until) for sid, until in mine.items()]
        found += [entry for sid, entry in hits if sid not in mine and sid not in excluded[user_id]
                  and (not groups or catalog.group_of.get(sid) not in groups)]
        answers.append(UserView(sorted(found, key=attrgetter("slug")), {sid for sid, _ in hits}, catalog))
    return answers
