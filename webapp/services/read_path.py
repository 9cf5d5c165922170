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

import json
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import URL, Engine

from webapp.models.enums import Source
from webapp.models.membership import live
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.services import rollout
from webapp.services.allocation import RolloutState, replay
from webapp.services.common import DbSession, check_user_id, iso, utcnow

# Driver-level SQL (psycopg parameters): the hot path skips the ORM. Kinds: 0 explicit
# membership, 1 rollout exclusion, 2 the catalog version (always present).
USER_ROWS = """
SELECT 0, segment_id, expires_at FROM memberships WHERE user_id = %(user)s
UNION ALL SELECT 1, segment_id, NULL FROM rollout_exclusions WHERE user_id = %(user)s
UNION ALL SELECT 2, version, NULL FROM catalog_version
"""
# Several users: the same rows as arrays (kind, user ids, segment ids, expiries), live
# memberships only ("now" is the reader's clock, as in the single read's evaluation).
USERS_ROWS = """
SELECT 0, array_agg(user_id), array_agg(segment_id), array_agg(expires_at) FROM memberships
WHERE user_id = ANY(%(users)s::bigint[]) AND (expires_at IS NULL OR expires_at > %(now)s)
UNION ALL SELECT 1, array_agg(user_id), array_agg(segment_id), NULL::timestamptz[] FROM rollout_exclusions
WHERE user_id = ANY(%(users)s::bigint[])
UNION ALL SELECT 2, ARRAY[version], NULL::int[], NULL::timestamptz[] FROM catalog_version
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

    @cached_property
    def json(self) -> str:
        """The entry as the API writes it (made once: the catalog's entries are shared by
        every read)."""
        return json.dumps({"slug": self.slug, "source": self.source, "expires_at": iso(self.expires_at)},
                          separators=(",", ":"))

    @cached_property
    def compat_json(self) -> str:
        """The entry as the seed's API writes it."""
        return json.dumps({"slug": self.slug}, separators=(",", ":"))


@dataclass(frozen=True)
class UserView:
    """A user's answer, with what a write path also needs: the catalog it was read with and
    (computed on demand) the live segments whose rollout covers the user now, whatever their
    explicit rows."""

    active: list[ActiveSegment]
    catalog: Catalog
    user_id: int
    now: datetime

    @cached_property
    def rollout_ids(self) -> set[int]:
        rollouts = self.catalog.rollouts(self.now)
        columns = np.flatnonzero(rollouts.matrix([self.user_id])[0]).tolist()
        return {rollouts.columns[c].id for c in columns} | {s.id for s in rollouts.scheme1_covering(self.user_id)}


@dataclass(frozen=True)
class CatalogSegment:
    id: int
    slug: str
    salt: str
    hash_scheme: int
    group_salt: str | None
    state: RolloutState
    rank: int  # position by slug among live segments (answers are sorted by slug)
    explicit: ActiveSegment  # the explicit entry without expiry, shared by every read
    rollout: ActiveSegment  # the rollout entry, shared by every read


@dataclass(frozen=True)
class Lookup:
    """Live segments as arrays indexed by slug rank (the answer's order), for the batch."""

    rank_by_id: np.ndarray  # segment id -> rank, -1 when not live
    explicit: np.ndarray  # rank -> the shared explicit entry (object array)
    group: np.ndarray  # rank -> exclusion group name or None (object array)

    @classmethod
    def of(cls, segments: Sequence[CatalogSegment]) -> Lookup:
        rank_by_id = np.full(max((s.id for s in segments), default=0) + 1, -1, dtype=np.intp)
        ordered = sorted(segments, key=attrgetter("rank"))
        rank_by_id[[s.id for s in ordered]] = [s.rank for s in ordered]
        return cls(rank_by_id, _objects([s.explicit for s in ordered]), _objects([s.state.group for s in ordered]))

    def index(self, segment_ids: Sequence[int]) -> np.ndarray:
        """Ranks of ``segment_ids`` (-1 for segments not live)."""
        ids = np.asarray(segment_ids, dtype=np.intp)
        inside = ids < len(self.rank_by_id)
        ranks = np.full(len(ids), -1, dtype=np.intp)
        ranks[inside] = self.rank_by_id[ids[inside]]
        return ranks


def _objects(items: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@dataclass(frozen=True)
class Rollouts:
    """Every live rollout at one moment, ready to evaluate. Scheme 1 as (segment, prefix, bp)
    triples; scheme 2 (and groups) as arrays of (key, bucket range) rows grouped by segment:
    ``columns`` (segment ids), ``first_row`` (each column's first row, for reduceat)."""

    scheme1: tuple[tuple[CatalogSegment, Any, int], ...]
    keys: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    first_row: np.ndarray
    columns: tuple[CatalogSegment, ...]
    column_of: dict[int, int]  # segment id -> column
    group_columns: dict[str, np.ndarray]
    column_by_index: np.ndarray  # segment rank -> column, -1 without a scheme 2 rollout
    column_rank: np.ndarray  # column -> segment rank
    column_entry: np.ndarray  # column -> the shared rollout entry (object array)

    def matrix(self, user_ids: Sequence[int]) -> np.ndarray:
        """users x columns: True where a scheme 2 rollout covers the user."""
        if not self.columns:
            return np.zeros((len(user_ids), 0), dtype=bool)
        if len(user_ids) == 1:
            hashes = np.array([rollout.user_hash(user_ids[0])], dtype=np.uint64)
        else:
            hashes = rollout.user_hashes(user_ids)
        buckets = rollout.mix_buckets(hashes[:, None] ^ self.keys[None, :])
        inside = (buckets >= self.starts) & (buckets < self.ends)
        if len(self.first_row) == len(self.keys):  # one range per segment: rows are columns
            return inside
        return np.logical_or.reduceat(inside, self.first_row, axis=1)

    def covers(self, segment_id: int, user_ids: Sequence[int]) -> np.ndarray:
        """For each of ``user_ids``: does this segment's rollout cover them (explicit rows and
        exclusions notwithstanding)?"""
        if not user_ids:
            return np.zeros(0, dtype=bool)
        scheme1 = [entry for entry in self.scheme1 if entry[0].id == segment_id]
        if scheme1:
            return np.fromiter((bool(list(rollout.covering(scheme1, u))) for u in user_ids), dtype=bool,
                               count=len(user_ids))
        column = self.column_of.get(segment_id)
        if column is None:
            return np.zeros(len(user_ids), dtype=bool)
        first = self.first_row[column]
        last = self.first_row[column + 1] if column + 1 < len(self.first_row) else len(self.keys)
        buckets = rollout.mix_buckets(rollout.user_hashes(user_ids)[:, None] ^ self.keys[None, first:last])
        inside = (buckets >= self.starts[first:last]) & (buckets < self.ends[first:last])
        return np.asarray(inside.any(axis=1), dtype=bool)

    def scheme1_covering(self, user_id: int) -> list[CatalogSegment]:
        return list(rollout.covering(self.scheme1, user_id))


@dataclass(frozen=True)
class Catalog:
    version: int
    segments: dict[int, CatalogSegment]
    group_of: dict[int, str]  # live segment id -> its exclusion group
    pending: tuple[tuple[datetime, int, int, int], ...]  # (at, schedule id, segment id, bp), in order
    lookup: Lookup
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
    scheme1: list[tuple[CatalogSegment, Any, int]] = []
    rows: list[tuple[int, int, int]] = []
    columns: list[CatalogSegment] = []
    first_row: list[int] = []
    for segment in sorted(segments.values(), key=attrgetter("rank")):
        state = states[segment.id]
        if segment.group_salt is not None and state.group is not None:
            ranges = [(rollout.key(segment.group_salt), start, end) for start, end in state.ranges]
        elif state.basis_points > 0 and segment.hash_scheme == 1:
            scheme1.append((segment, rollout.prefix(segment.salt), state.basis_points))
            continue
        elif state.basis_points > 0:
            ranges = [(rollout.key(segment.salt), 0, state.basis_points)]
        else:
            continue
        if ranges:
            first_row.append(len(rows))
            columns.append(segment)
            rows += ranges
    groups: dict[str, list[int]] = {}
    for column, segment in enumerate(columns):
        if (group := states[segment.id].group) is not None:
            groups.setdefault(group, []).append(column)
    column_by_index = np.full(len(segments), -1, dtype=np.intp)
    column_by_index[[s.rank for s in columns]] = np.arange(len(columns), dtype=np.intp)
    return Rollouts(tuple(scheme1), np.array([r[0] for r in rows], dtype=np.uint64),
                    np.array([r[1] for r in rows], dtype=np.uint64), np.array([r[2] for r in rows], dtype=np.uint64),
                    np.array(first_row, dtype=np.intp), tuple(columns),
                    {s.id: c for c, s in enumerate(columns)}, {g: np.array(c, dtype=np.intp) for g, c in groups.items()},
                    column_by_index, np.array([s.rank for s in columns], dtype=np.intp),
                    _objects([s.rollout for s in columns]))


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
    catalog, rows, at = _snapshot(lambda sql, params: connection.exec_driver_sql(sql, params).all(),
                                  connection.engine.url, [user_id], now, keep=False)
    return _evaluate_one(catalog, rows, user_id, at)


def hot_read(engine: Engine, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """:func:`active_segments` of committed data for a request that writes nothing: straight
    on a pooled driver connection in autocommit mode (no ORM, no BEGIN/ROLLBACK, no pre-ping:
    a connection the server dropped is replaced and the read retried once)."""
    return hot_read_many(engine, [user_id], now)[0]


def hot_read_many(engine: Engine, user_ids: Sequence[int], now: datetime | None = None) -> list[list[ActiveSegment]]:
    """:func:`hot_read` for several users at once: one statement, rollouts evaluated for all
    of them together as one NumPy matrix. Answers in the order of ``user_ids``."""
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if not driver.autocommit:  # (the read engine connects in autocommit mode)
                driver.autocommit = True
            catalog, rows, at = _snapshot(_executor(driver), engine.url, user_ids, now, keep=True)
            if len(user_ids) == 1:
                return [_evaluate_one(catalog, rows, user_ids[0], at).active]
            return _evaluate(catalog, rows, user_ids, at)
        except psycopg.OperationalError:
            connection.invalidate()
            if attempt == 2:
                raise
        finally:
            connection.close()  # back to the pool (or discarded, if invalidated)
    raise AssertionError("unreachable")


def _executor(driver: psycopg.Connection[Any]) -> Execute:
    def execute(sql: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        with driver.cursor(binary=True) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    return execute


def _snapshot(execute: Execute, key: URL, user_ids: Sequence[int], now: datetime | None, *,
              keep: bool) -> tuple[Catalog, _UserRows, datetime]:
    """The users' rows and a catalog of the same version (re-read as needed), and ``now``."""
    for user_id in user_ids:
        check_user_id(user_id)
    now = now or utcnow()
    catalog = _kept.get(key)
    single = len(user_ids) == 1
    for _ in range(MAX_ATTEMPTS):
        if single:
            rows = _UserRows.of_one(user_ids[0], execute(USER_ROWS, {"user": user_ids[0]}), now)
        else:
            # (the ids as one array literal: psycopg dumps a text value faster than a list of ints)
            ids = "{" + ",".join(map(str, user_ids)) + "}"
            rows = _UserRows.of_many(execute(USERS_ROWS, {"users": ids, "now": now}))
        version = rows.version
        if catalog is None or catalog.version != version:
            catalog = _catalog(execute(CATALOG, {}))
            if keep:
                with _lock:
                    _kept[key] = catalog
            if catalog.version != version:
                continue  # the catalog moved on between the two statements: read the users again
        return catalog, rows, now
    raise RuntimeError("the segment catalog kept changing during one read")


@dataclass(frozen=True)
class _UserRows:
    """The users' live memberships and exclusions as parallel lists, and the catalog version."""

    version: int
    users: list[int]
    segments: list[int]
    expiries: list[datetime | None]
    excluded_users: list[int]
    excluded_segments: list[int]

    @classmethod
    def of_one(cls, user_id: int, rows: Sequence[Sequence[Any]], now: datetime) -> _UserRows:
        members = [(sid, at) for kind, sid, at in rows if kind == 0 and live(at, now)]
        excluded = [sid for kind, sid, _ in rows if kind == 1]
        return cls(next(sid for kind, sid, _ in rows if kind == 2), [user_id] * len(members),
                   [sid for sid, _ in members], [at for _, at in members], [user_id] * len(excluded), excluded)

    @classmethod
    def of_many(cls, rows: Sequence[Sequence[Any]]) -> _UserRows:
        by_kind = {row[0]: row for row in rows}
        _, users, segments, expiries = by_kind[0]
        _, excluded_users, excluded_segments, _ = by_kind[1]
        return cls(by_kind[2][1][0], users or [], segments or [], expiries or [], excluded_users or [],
                   excluded_segments or [])


def _catalog(rows: Sequence[Sequence[Any]]) -> Catalog:
    """Rows of CATALOG (at least one: the version, with NULLs when no segment is live)."""
    live_rows = sorted((row for row in rows if row[0] == 0 and row[2] is not None), key=lambda row: row[3])
    segments: dict[int, CatalogSegment] = {}
    for rank, (_, _, sid, slug, salt, bp, scheme, group, group_salt, ranges, _) in enumerate(live_rows):
        state = RolloutState(bp, group, rollout.ranges_of(ranges, bp) if group else ())
        segments[sid] = CatalogSegment(sid, slug, salt, scheme, group_salt, state, rank,
                                       ActiveSegment(slug, Source.EXPLICIT, None),
                                       ActiveSegment(slug, Source.ROLLOUT, None))
    pending = sorted((row[10], row[1], row[2], row[5]) for row in rows if row[0] == 1)
    version = next(row[1] for row in rows if row[0] == 0)
    group_of = {sid: s.state.group for sid, s in segments.items() if s.state.group is not None}
    return Catalog(version, segments, group_of, tuple(pending), Lookup.of(list(segments.values())))


def _evaluate(catalog: Catalog, rows: _UserRows, user_ids: Sequence[int],
              now: datetime) -> list[list[ActiveSegment]]:
    """Each user's answer: live explicit rows, and the rollouts covering each user (one NumPy
    matrix for all users) minus those an explicit row, an exclusion or, in a group, an
    explicit membership of another of the group's segments overrides; sorted by slug, all
    users at once. A repeated id gets the same answer again."""
    unique = list(dict.fromkeys(user_ids))
    by_id = np.asarray(unique, dtype=np.int64)
    id_order = np.argsort(by_id)

    def positions(ids: list[int]) -> np.ndarray:
        """Each id's index in ``unique`` (every id is one of them)."""
        return id_order[np.searchsorted(by_id[id_order], np.asarray(ids, dtype=np.int64))] if ids \
            else np.zeros(0, dtype=np.intp)

    rollouts = catalog.rollouts(now)
    covered = rollouts.matrix(unique)
    lookup = catalog.lookup
    # explicit memberships of live segments: (position, segment index)
    member_at = positions(rows.users)
    member_index = lookup.index(rows.segments)
    known = member_index >= 0
    member_at, member_index = member_at[known], member_index[known]
    expiries = [at for at, ok in zip(rows.expiries, known.tolist(), strict=True) if ok] if not known.all() \
        else rows.expiries
    if catalog.group_of:
        keep = _one_per_group(member_at, member_index, lookup.group[member_index])
        if not keep.all():
            member_at, member_index = member_at[keep], member_index[keep]
            expiries = [at for at, ok in zip(expiries, keep.tolist(), strict=True) if ok]
    excluded_at = positions(rows.excluded_users)
    excluded_index = lookup.index(rows.excluded_segments)
    # Covered cells an explicit row or an exclusion overrides, and groups an explicit member holds.
    for at, index in ((member_at, member_index), (excluded_at, excluded_index)):
        columns = rollouts.column_by_index[index] if len(index) else index
        hit = columns >= 0
        covered[at[hit], columns[hit]] = False
    for group, group_columns in rollouts.group_columns.items():
        holders = member_at[lookup.group[member_index] == group]
        if len(holders):
            covered[np.ix_(np.unique(holders), group_columns)] = False
    explicit = lookup.explicit[member_index]
    if expiries.count(None) != len(expiries):
        explicit = explicit.copy()
        for i, until in enumerate(expiries):
            if until is not None:
                explicit[i] = ActiveSegment(explicit[i].slug, Source.EXPLICIT, until)
    hit_at, hit_columns = np.nonzero(covered)
    users = np.concatenate([member_at, hit_at])
    ranks = np.concatenate([member_index, rollouts.column_rank[hit_columns]])
    entries = np.concatenate([explicit, rollouts.column_entry[hit_columns]])
    if rollouts.scheme1:  # segments hashed the old way: evaluated one user at a time
        overridden = set(zip(member_at.tolist(), member_index.tolist(), strict=True)) | \
            set(zip(excluded_at.tolist(), excluded_index.tolist(), strict=True))
        extra = [(at, segment) for at, user_id in enumerate(unique) for segment in rollouts.scheme1_covering(user_id)
                 if (at, segment.rank) not in overridden and segment.id not in catalog.group_of]
        if extra:
            users = np.concatenate([users, np.array([at for at, _ in extra], dtype=np.intp)])
            ranks = np.concatenate([ranks, np.array([s.rank for _, s in extra], dtype=np.intp)])
            entries = np.concatenate([entries, np.array([s.rollout for _, s in extra] + [None], dtype=object)[:-1]])
    order = np.lexsort((ranks, users))
    bounds = np.searchsorted(users[order], np.arange(len(unique) + 1)).tolist()
    ordered = entries[order].tolist()
    answers = [ordered[bounds[i]:bounds[i + 1]] for i in range(len(unique))]
    if len(unique) == len(user_ids):
        return answers
    position = {u: i for i, u in enumerate(unique)}
    return [answers[position[u]] for u in user_ids]


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
    """:func:`_evaluate` for one user, in plain Python around one NumPy row (what a single
    read costs most is fixed overhead, which the arrays of the batch would add)."""
    segments, group_of = catalog.segments, catalog.group_of
    found: list[tuple[int, ActiveSegment]] = []
    overridden = set(rows.excluded_segments)
    groups = set()
    mine = sorted((segments[sid].rank, sid, until) for sid, until in zip(rows.segments, rows.expiries, strict=True)
                  if sid in segments)
    for _, sid, until in mine:
        segment = segments[sid]
        if (group := group_of.get(sid)) is not None:
            if group in groups:
                continue  # a second explicit segment of one group: see _one_per_group
            groups.add(group)
        found.append((segment.rank, segment.explicit if until is None
                      else ActiveSegment(segment.slug, Source.EXPLICIT, until)))
        overridden.add(sid)
    rollouts = catalog.rollouts(now)
    covering = [rollouts.columns[c] for c in np.flatnonzero(rollouts.matrix([user_id])[0]).tolist()]
    covering += rollouts.scheme1_covering(user_id)
    found += [(s.rank, s.rollout) for s in covering
              if s.id not in overridden and (not groups or group_of.get(s.id) not in groups)]
    found.sort(key=itemgetter(0))
    return UserView([entry for _, entry in found], catalog, user_id, now)
