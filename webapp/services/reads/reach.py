"""Reach as product managers think of it: "10% of all users + 7 explicit", and how many of the
*known* users (distinct user ids that appear in memberships or in membership history) a
rollout covers.

The two expensive aggregates are cached in Redis (the app's web client, its short timeouts)
with a short TTL, under keys that change the moment their answer may change:

* member counts per segment (``member_counts``): the catalog version and the newest
  ``membership_events`` id, so an add, removal, bulk operation or purge shows at once;
* known users and each rollout's coverage (``rollout_reach``): the catalog version, so a
  rollout change, a new segment or a group move shows at once; new users count within the
  TTL (``REACH_CACHE_SECONDS``).

Values are stored as JSON text (never pickled: write access to Redis is not code execution),
under ``CACHE_KEY_PREFIX``. The cache is an optimisation only: when Redis fails or stalls the
answer is computed (one short timeout, then the cache is skipped for ``BYPASS_SECONDS``), never
an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
from flask import current_app, has_app_context
from sqlalchemy import func, select, text

from webapp.models import CatalogVersion, ExclusionGroup, MembershipEvent, RolloutExclusion, Segment
from webapp.platform.redis_client import redis_client
from webapp.services.common import DbSession
from webapp.services.rollout import buckets as rollout
from webapp.services.segments import lifecycle as segment_service
from webapp.services.segments.rollout_state import rule_of
from webapp.telemetry.metrics import cache_result

log = logging.getLogger(__name__)
T = TypeVar("T")
COUNTS_SECONDS = 30  # member counts: exact by key, the TTL only bounds expiries by time
REACH_SECONDS = 60  # known users and coverage: new users appear within this
BYPASS_SECONDS = 5.0  # after a cache failure, compute without asking Redis for this long
KNOWN_USERS_SQL = text("SELECT user_id FROM memberships UNION SELECT user_id FROM membership_events")

_bypass_until = 0.0


@dataclass(frozen=True)
class Reach:
    """One segment's reach: its rollout share, explicit members, and for a rollout the known
    users it covers (``covered`` of ``known``)."""

    rollout_percent: float
    explicit: int
    known: int
    covered: int | None  # None without a rollout, or answering by rules
    by_rules: int | None = None  # a segment answering by its rules: users in through them now

    @property
    def covered_share(self) -> float:
        return self.covered / self.known if self.known and self.covered else 0.0


# -- the cache: Redis, never an error --------------------------------------------------------------


def cached(name: str, key: str, compute: Callable[[], T], timeout: int) -> T:
    """``compute()``'s answer through the cache under ``name:key``; any cache failure (Redis
    down, stalled, a value it cannot decode) is logged and the answer computed."""
    global _bypass_until
    if not has_app_context() or time.monotonic() < _bypass_until:
        return compute()
    client = redis_client()  # the web client: 0.25 s connect and read timeouts
    full_key = f"{current_app.config['CACHE_KEY_PREFIX']}{name}:{key}"
    try:
        raw = cast("bytes | None", client.get(full_key))  # (the sync client)
        found = json.loads(raw) if raw is not None else None
    except Exception as exc:  # noqa: BLE001 - a cache must never fail the page
        _bypass_until = time.monotonic() + BYPASS_SECONDS
        log.warning("cache %s unavailable (%s): computing without it for %ss", name, exc, BYPASS_SECONDS)
        return compute()
    if found is not None:
        cache_result(True, name)
        return cast(T, found)
    cache_result(False, name)
    value = compute()
    try:
        client.set(full_key, json.dumps(value), ex=timeout)
    except Exception as exc:  # noqa: BLE001
        _bypass_until = time.monotonic() + BYPASS_SECONDS
        log.warning("cache %s unavailable (%s): computing without it for %ss", name, exc, BYPASS_SECONDS)
    return value


def _timeout(setting: str, default: int) -> int:
    return int(current_app.config.get(setting, default)) if has_app_context() else default


# -- member counts ------------------------------------------------------------------------------


def catalog_version(session: DbSession) -> int:
    return int(session.scalar(select(CatalogVersion.version).where(CatalogVersion.id == 1)) or 0)


def history_watermark(session: DbSession) -> int:
    """The newest membership history id: it moves with every explicit membership change."""
    return int(session.scalar(select(func.max(MembershipEvent.id))) or 0)


def _counts_key(session: DbSession, ids: list[int]) -> str:
    """A count's cache key: the catalog version, the newest history row (every membership change
    writes one) and the segments asked."""
    digest = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=8).hexdigest()
    return f"v{catalog_version(session)}:h{history_watermark(session)}:{digest}"


def member_counts(session: DbSession, segment_ids: list[int]) -> dict[int, int]:
    """segments.member_counts through the cache (exact: the key moves with every change)."""
    if not segment_ids:
        return {}
    ids = sorted(set(segment_ids))
    raw = cached(
        "member_counts",
        _counts_key(session, ids),
        lambda: {str(k): v for k, v in segment_service.member_counts(session, ids).items()},
        _timeout("MEMBER_COUNTS_CACHE_SECONDS", COUNTS_SECONDS),
    )
    return {sid: int(raw.get(str(sid), 0)) for sid in segment_ids}


def rule_counts(session: DbSession, segment_ids: list[int]) -> dict[int, int]:
    """Users in each segment through its rules now (its ``rule_matches`` rows: rules matched and
    in the percentage), through the cache; exact, as member counts are: every row written or
    removed writes a history row, which moves the key."""
    if not segment_ids:
        return {}
    ids = sorted(set(segment_ids))
    raw = cached(
        "rule_counts",
        _counts_key(session, ids),
        lambda: {
            str(k): int(v)
            for k, v in session.execute(
                text(
                    "SELECT segment_id, count(*) FROM rule_matches "
                    "WHERE segment_id = ANY(CAST(:ids AS int[])) GROUP BY segment_id"
                ),
                {"ids": ids},
            ).all()
        },
        _timeout("MEMBER_COUNTS_CACHE_SECONDS", COUNTS_SECONDS),
    )
    return {sid: int(raw.get(str(sid), 0)) for sid in segment_ids}


# -- known users and rollout coverage ------------------------------------------------------------


def known_user_ids(session: DbSession) -> np.ndarray:
    """Distinct user ids in memberships or membership history (one set-based query)."""
    rows = session.execute(KNOWN_USERS_SQL)
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def compute_coverage(session: DbSession) -> dict[str, Any]:
    """{"known": N, "covered": {segment id: known users its rollout covers}} for every live
    segment with a rollout (exclusions, users taken out of the rollout, not counted); a segment
    answering by its rules covers nobody by its buckets alone (``rule_counts``)."""
    segments = session.scalars(
        select(Segment).where(Segment.is_live, Segment.rollout_basis_points > 0, ~Segment.rule_mode)
    ).all()
    ids = known_user_ids(session)
    covered: dict[str, int] = {}
    if segments:
        groups = {s.exclusion_group for s in segments if s.exclusion_group}
        salts = (
            dict(
                session.execute(
                    select(ExclusionGroup.name, ExclusionGroup.salt).where(ExclusionGroup.name.in_(groups))
                ).all()
            )
            if groups
            else {}
        )
        excluded: dict[int, list[int]] = {}
        for segment_id, user_id in session.execute(
            select(RolloutExclusion.segment_id, RolloutExclusion.user_id).where(
                RolloutExclusion.segment_id.in_([s.id for s in segments])
            )
        ):
            excluded.setdefault(segment_id, []).append(user_id)
        hashes = rollout.user_hashes(cast(Sequence[int], ids))  # once for every rollout (the costly part)
        for segment in segments:
            rule = rule_of(segment, salts.get(segment.exclusion_group or ""))
            count = rollout.share(rule, cast(Sequence[int], ids), hashes)
            out = np.asarray(excluded.get(segment.id, []), dtype=np.int64)
            if out.size:
                count -= rollout.share(rule, cast(Sequence[int], out[np.isin(out, ids)]))
            covered[str(segment.id)] = int(count)
    return {"known": int(ids.size), "covered": covered}


def rollout_reach(session: DbSession) -> dict[str, Any]:
    """compute_coverage through the cache (keyed by the catalog version)."""
    return cached(
        "reach",
        f"v{catalog_version(session)}",
        lambda: compute_coverage(session),
        _timeout("REACH_CACHE_SECONDS", REACH_SECONDS),
    )


def reach_of(
    session: DbSession, segments: Iterable[Segment], counts: dict[int, int] | None = None
) -> dict[int, Reach]:
    """Each segment's Reach by id; ``counts``: explicit member counts already at hand."""
    segments = list(segments)
    counts = counts if counts is not None else member_counts(session, [s.id for s in segments])
    coverage: dict[str, Any] = {"known": 0, "covered": {}}
    if any(s.rollout_basis_points and not s.rule_mode for s in segments):
        coverage = rollout_reach(session)
    by_rules = rule_counts(session, [s.id for s in segments if s.rule_mode])
    result = {}
    for segment in segments:
        percent, explicit = segment.rollout_basis_points / 100, counts.get(segment.id, 0)
        if segment.rule_mode:
            result[segment.id] = Reach(percent, explicit, 0, None, by_rules.get(segment.id, 0))
            continue
        covered = coverage["covered"].get(str(segment.id)) if segment.rollout_basis_points else None
        if segment.rollout_basis_points and covered is None:  # (a segment newer than the cached answer)
            covered = 0
        result[segment.id] = Reach(percent, explicit, int(coverage["known"]), covered)
    return result
