"""The segment catalog each process keeps for the read path (``read_path``): the live
segments with their shared answer entries, the scheduled rollout changes not yet applied, and
the rollouts in force at a moment as NumPy arrays ready to evaluate for many users at once.

``CATALOG`` reads it in one statement, with the ``catalog_version`` it belongs to; ``load_catalog``
builds it from those rows. Nothing here touches the database or Redis.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from operator import attrgetter
from typing import Any

import numpy as np

from webapp.models.enums import Source
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.services.common import iso
from webapp.services.rollout import buckets as rollout
from webapp.services.rollout.allocation import RolloutState, replay

# Live segments (kind 0, with the version: at least one row) and pending scheduled changes
# of live segments (kind 1), from one snapshot. A segment in rule mode (issue 29) covers the
# users of its rule_matches rows (the read's kind 3) instead of its rollout's buckets.
CATALOG = f"""
SELECT 0, v.version, s.id, s.slug, s.salt, s.rollout_basis_points, s.hash_scheme, s.exclusion_group,
       g.salt, s.bucket_ranges, NULL::timestamptz, s.rule_mode
FROM catalog_version v LEFT JOIN segments s ON s.{LIVE_SEGMENT_SQL}
LEFT JOIN exclusion_groups g ON g.name = s.exclusion_group
UNION ALL
SELECT 1, r.id, r.segment_id, NULL, NULL, r.rollout_basis_points, NULL, NULL, NULL, NULL, r.at, NULL
FROM rollout_schedule r JOIN segments s ON s.id = r.segment_id AND s.{LIVE_SEGMENT_SQL}
WHERE r.applied_at IS NULL AND r.cancelled_at IS NULL
"""


@dataclass(frozen=True)
class ActiveSegment:
    slug: str
    source: Source
    expires_at: datetime | None

    @cached_property
    def json(self) -> str:
        """The entry as the API writes it (made once: the catalog's entries are shared by
        every read)."""
        return json.dumps(
            {"slug": self.slug, "source": self.source, "expires_at": iso(self.expires_at)},
            separators=(",", ":"),
        )

    @cached_property
    def compat_json(self) -> str:
        """The entry as the seed's API writes it."""
        return json.dumps({"slug": self.slug}, separators=(",", ":"))


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
    rollout: ActiveSegment  # the rollout entry (a rule entry in rule mode), shared by every read
    rule_mode: bool = False  # covers the users of its rule_matches rows, not its buckets


@dataclass(frozen=True)
class Lookup:
    """Live segments as arrays indexed by slug rank (the answer's order), for the batch."""

    rank_by_id: np.ndarray  # segment id -> rank, -1 when not live
    explicit: np.ndarray  # rank -> the shared explicit entry (object array)
    explicit_json: np.ndarray  # rank -> its JSON (object array)
    group: np.ndarray  # rank -> exclusion group name or None (object array)
    slug: np.ndarray  # rank -> slug (object array)

    @classmethod
    def of(cls, segments: Sequence[CatalogSegment]) -> Lookup:
        rank_by_id = np.full(max((s.id for s in segments), default=0) + 1, -1, dtype=np.intp)
        ordered = sorted(segments, key=attrgetter("rank"))
        rank_by_id[[s.id for s in ordered]] = [s.rank for s in ordered]
        return cls(
            rank_by_id,
            objects([s.explicit for s in ordered]),
            objects([s.explicit.json for s in ordered]),
            objects([s.state.group for s in ordered]),
            objects([s.slug for s in ordered]),
        )

    def index(self, segment_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Ranks of ``segment_ids`` (-1 for segments not live)."""
        ids = np.asarray(segment_ids, dtype=np.intp)
        inside = ids < len(self.rank_by_id)
        ranks = np.full(len(ids), -1, dtype=np.intp)
        ranks[inside] = self.rank_by_id[ids[inside]]
        return ranks


def objects(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``items`` (never a 2-D one, whatever they are)."""
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
    column_json: np.ndarray  # column -> its JSON (object array)

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
            return np.fromiter(
                (bool(list(rollout.covering(scheme1, u))) for u in user_ids), dtype=bool, count=len(user_ids)
            )
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

    def covering(self, user_id: int) -> list[CatalogSegment]:
        """The live segments whose rollout covers the user (explicit rows notwithstanding;
        segments in rule mode never: they cover by their rule_matches rows)."""
        columns = np.flatnonzero(self.matrix([user_id])[0]).tolist()
        return [self.columns[c] for c in columns] + self.scheme1_covering(user_id)


@dataclass(frozen=True)
class Catalog:
    version: int
    segments: dict[int, CatalogSegment]
    group_of: dict[int, str]  # live segment id -> its exclusion group
    pending: tuple[tuple[datetime, int, int, int], ...]  # (at, schedule id, segment id, bp), in order
    lookup: Lookup
    _at: dict[int, Rollouts] = field(default_factory=dict, compare=False)  # by number of due changes

    @cached_property
    def rule_ids(self) -> frozenset[int]:
        """Live segments in rule mode (covering the users of their rule_matches rows)."""
        return frozenset(sid for sid, s in self.segments.items() if s.rule_mode)

    @cached_property
    def by_slug(self) -> dict[str, CatalogSegment]:
        """Live segments by slug (made once per catalog, on its first use)."""
        return {s.slug: s for s in self.segments.values()}

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
        if segment.rule_mode:  # a column no bucket falls in: the read sets it from rule_matches
            ranges = [(0, 0, 0)]
        elif segment.group_salt is not None and state.group is not None:
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
    return Rollouts(
        tuple(scheme1),
        np.array([r[0] for r in rows], dtype=np.uint64),
        np.array([r[1] for r in rows], dtype=np.uint64),
        np.array([r[2] for r in rows], dtype=np.uint64),
        np.array(first_row, dtype=np.intp),
        tuple(columns),
        {s.id: c for c, s in enumerate(columns)},
        {g: np.array(c, dtype=np.intp) for g, c in groups.items()},
        column_by_index,
        np.array([s.rank for s in columns], dtype=np.intp),
        objects([s.rollout for s in columns]),
        objects([s.rollout.json for s in columns]),
    )


def load_catalog(rows: Sequence[Sequence[Any]]) -> Catalog:
    """Rows of CATALOG (at least one: the version, with NULLs when no segment is live)."""
    live_rows = sorted((row for row in rows if row[0] == 0 and row[2] is not None), key=lambda row: row[3])
    segments: dict[int, CatalogSegment] = {}
    for rank, (_, _, sid, slug, salt, bp, scheme, group, group_salt, ranges, _, rule_mode) in enumerate(
        live_rows
    ):
        state = RolloutState(bp, group, rollout.ranges_of(ranges, bp) if group else ())
        segments[sid] = CatalogSegment(
            sid,
            slug,
            salt,
            scheme,
            group_salt,
            state,
            rank,
            ActiveSegment(slug, Source.EXPLICIT, None),
            ActiveSegment(slug, Source.RULE if rule_mode else Source.ROLLOUT, None),
            bool(rule_mode),
        )
    pending = sorted((row[10], row[1], row[2], row[5]) for row in rows if row[0] == 1)
    version = next(row[1] for row in rows if row[0] == 0)
    group_of = {sid: s.state.group for sid, s in segments.items() if s.state.group is not None}
    return Catalog(version, segments, group_of, tuple(pending), Lookup.of(list(segments.values())))
