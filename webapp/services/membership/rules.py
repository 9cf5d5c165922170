"""Rule segments' matches, materialised (issue 29): who each rule segment covers, kept per user.

A ``rule_matches`` row (user, segment) means: the user has stored traits, the segment's rules
match them (``targeting.RuleSet.match``) and the user's bucket is in the segment's rollout (its
own buckets, or its ranges in its exclusion group) — as of the evaluation that wrote it. Reads
count a segment in rule mode as covering exactly the users of its rows (``reads.path``); the
membership rule is unchanged: explicit beats exclusion beats coverage, an explicit member holds
their group. Every row written or deleted has its ``rule`` history row (``membership.store.set_matches``,
the one writer), so history replays rule membership from stored rows like explicit changes.

Two writers evaluate:

- :func:`rematch` — a trait change (``services.traits.store.write``, per user and per import
  chunk), in its transaction: every live segment with rules (in rule mode, or pending: a plain
  segment whose first rules are still being evaluated) for every user whose traits changed; a
  user whose traits are gone loses every row.
- :func:`reevaluate_chunk` — one chunk of a segment's re-evaluation operation
  (``OperationKind.REEVALUATE_RULES``, queued by ``segments.rollout_state.start_reevaluation``
  when a rule segment's rules, percentage or group change): the next users with traits by id,
  for the segment's rules version the operation was queued for. A newer version supersedes it
  (it stops at its next chunk; the newer one starts from the first user). When a plain segment's
  first rules have been evaluated for everyone, a last step switches it to rule mode.

Locks (the global order of ``membership.store``): a trait change holds its users' locks, then
takes the rule-set lock shared (``rollout_state.RULE_SET_LOCK``: every change of rule segments
takes it exclusive before its bulk locks, so none commits while a trait change evaluates; the
trait writer takes it with its read of the traits), then in one statement (:func:`lock_scope`)
the bulk locks of the live rule segments and of the other live segments of their exclusion
groups *shared* (id order), the clock that stamps its rows once they are held, and the rule
scope's fingerprint from a snapshot taken after the rule-set lock: the rule segments evaluated
are the scope kept for that fingerprint, or read then (no segment row lock: 200 rule segments
would be 200 tuple locks written by every trait write). A
chunk share-locks its segment's row, then takes the bulk locks of its segment and its group's
other live segments *exclusive* (id order), then reads its clock; a switch of mode takes its
segment's bulk lock exclusive after its row. So a chunk and a trait change of the same user never
interleave (each decides from rows and traits the other has committed), a per-user or bulk
membership change of the segment or its group waits for the chunk (their rows decide whether a
rule row moves an answer), and a rule change that commits while a trait change waits for its
lock is seen by it (its snapshot is taken after it) or re-evaluates its users after it (its chunk
waits).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, func, select, text
from sqlalchemy.exc import OperationalError

from webapp.models import BulkOperation, ExclusionGroup, Segment, TraitKey, UserTraits
from webapp.models.enums import RuleCause
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.services import targeting
from webapp.services.common import DbSession, clock
from webapp.services.membership import store as membership_store
from webapp.services.rollout import buckets as rollout
from webapp.services.segments import rollout_state

CHUNK = 5_000  # users with traits per transaction of a re-evaluation
EVALUATE_PASS, SWITCH_PASS = 0, 1  # a re-evaluation's phases: the users, then (a first rule set) the switch

Traits = Mapping[str, Any]


@dataclass(frozen=True)
class RuleSegment:
    """A live segment with rules, as its evaluation needs it."""

    id: int
    slug: str
    rules_version: int
    rule_mode: bool
    ruleset: targeting.RuleSet
    coverage: rollout.Rule  # who its rollout covers: its buckets, or its ranges in its group
    group: str | None


@lru_cache(maxsize=1024)
def _parsed(canonical: str) -> targeting.RuleSet:
    return targeting.parse(json.loads(canonical))


def ruleset_of(rules: Any) -> targeting.RuleSet:
    """The stored (canonical) rules parsed, once per distinct rule set per process."""
    return _parsed(json.dumps(rules, sort_keys=True, separators=(",", ":")))


def _rule_segment(segment: Segment, group_salt: str | None) -> RuleSegment:
    return RuleSegment(
        segment.id,
        segment.slug,
        segment.rules_version,
        segment.rule_mode,
        ruleset_of(segment.rules),
        rollout_state.rule_of(segment, group_salt),
        segment.exclusion_group,
    )


_parsed_by_digest: dict[str, targeting.RuleSet] = {}  # md5 of the stored rules' text -> parsed
# a rule scope row (but its fingerprint) -> its RuleSegment
_rule_segments: dict[tuple[Any, ...], RuleSegment] = {}

# The rule scope: the live rule segments and the other live segments of their exclusion groups
# (their bulk locks are taken too), by id, each with the version of its row and of its group's
# row (``xmin``: the transaction that wrote it, ``ctid``: where; one row version has one pair
# for as long as it can be seen, and no later version has it again) and, belt and braces, the
# small columns deciding its coverage (a rules change bumps rules_version).
_SCOPE_ROWS = f"""
SELECT s.id, s.slug, s.rules, s.rules_version, s.rule_mode, s.salt, s.hash_scheme, s.exclusion_group,
       s.bucket_ranges, s.rollout_basis_points, g.salt AS group_salt,
       concat_ws(':', s.id, s.xmin, s.ctid, g.xmin, g.ctid, s.rules_version, s.rule_mode,
                 s.rollout_basis_points, s.bucket_ranges, s.exclusion_group) AS version
FROM segments s LEFT JOIN exclusion_groups g ON g.name = s.exclusion_group
WHERE s.{LIVE_SEGMENT_SQL} AND (s.rules IS NOT NULL OR s.exclusion_group IN (
    SELECT r.exclusion_group FROM segments r WHERE r.{LIVE_SEGMENT_SQL} AND r.rules IS NOT NULL))
ORDER BY s.id OFFSET 0
"""
# One statement, after the rule-set lock: the bulk locks of the scope's segments, shared, in id
# order; the database's clock once they are held (the aggregate's result is made after its last
# row: the instant the caller's rows are stamped with); and the scope's fingerprint (md5 of its
# rows' versions, in id order) naming what the scope read with this snapshot holds.
_SCOPE_LOCKS = text(
    f"""
SELECT count(pg_advisory_xact_lock_shared(:space, s.id)), clock_timestamp(), md5(string_agg(s.version, ','))
FROM ({_SCOPE_ROWS}) s
"""
)
# The scope's rows (kind 1: what evaluating a rule segment needs; kind 0: a group neighbour), by
# id, with its fingerprint from the same snapshot: read when no kept scope has that fingerprint.
_RULE_SCOPE = text(
    f"""
WITH scope AS MATERIALIZED ({_SCOPE_ROWS})
SELECT s.rules IS NOT NULL, s.id, s.slug, s.rules_version, s.rule_mode, s.salt, s.hash_scheme,
       s.exclusion_group, s.bucket_ranges, s.rollout_basis_points, s.group_salt, md5(s.rules::text),
       (SELECT md5(string_agg(v.version, ',')) FROM (SELECT version FROM scope ORDER BY id) v)
FROM scope s ORDER BY s.id
"""
)


@dataclass(frozen=True)
class RuleScope:
    """The live rule segments (by id) and every segment id whose bulk lock is taken with them."""

    segments: tuple[RuleSegment, ...]
    ids: tuple[int, ...]


_scopes: dict[tuple[Any, ...], RuleScope] = {}  # (database, fingerprint) -> the scope it names
MAX_SCOPES = 64  # fingerprints kept per process (each change of a rule segment makes a new one)


def _read_scope(session: DbSession) -> tuple[str | None, RuleScope]:
    """The scope read from its rows (each RuleSegment made once per distinct row), with the
    fingerprint of exactly the rows read."""
    rows = session.execute(_RULE_SCOPE).all()
    segments: list[RuleSegment] = []
    for row in rows:
        if not row[0]:
            continue
        # (all but the fingerprint, ranges as a tuple: the same row makes the same RuleSegment)
        key = tuple(tuple(v) if isinstance(v, list) else v for v in row[1:-1])
        found = _rule_segments.get(key)
        if found is None:
            _, sid, slug, version, mode, salt, scheme, group, ranges, bp, group_salt, digest, _ = row
            if group is not None and group_salt is not None:
                coverage = rollout.Rule(rollout.SCHEME, group_salt, rollout.ranges_of(ranges, bp))
            else:
                coverage = rollout.Rule(scheme, salt, rollout.ranges_of(None, bp))
            found = RuleSegment(sid, slug, version, mode, _rules_of(session, sid, digest), coverage, group)
            if len(_rule_segments) > 10_000:
                _rule_segments.clear()
            _rule_segments[key] = found
        segments.append(found)
    return (rows[0][-1] if rows else None), RuleScope(tuple(segments), tuple(row[1] for row in rows))


def lock_scope(session: DbSession) -> tuple[RuleScope, datetime]:
    """For a trait write holding the rule-set lock shared: the bulk locks of the rule scope's
    segments taken shared (id order), the clock read once they are held, and the scope — the
    one kept for its fingerprint, or read (and kept) when none is.

    A kept scope is as exact as one read now: its key is the database and the versions of every
    row it was made from (a change of any of them — rules, percentage, group, mode, deletion,
    restore, a segment joining a rule segment's group, the group's salt — is a new row version;
    a transaction rolled back takes its versions with it), and while the caller holds the
    rule-set lock no change of a rule segment commits (every one takes it exclusive), so the
    fingerprint read with the locks names the rules in force until the caller commits."""
    _, now, fingerprint = session.execute(_SCOPE_LOCKS, {"space": membership_store.BULK_LOCK_SPACE}).one()
    if fingerprint is None:  # no rule segment at all
        return RuleScope((), ()), now
    url = session.connection().engine.url
    key = (url.host, url.port, url.database, url.query.get("host"), fingerprint)
    found = _scopes.get(key)
    if found is None:
        read, found = _read_scope(session)
        if len(_scopes) >= MAX_SCOPES:
            _scopes.clear()
        _scopes[(*key[:-1], read)] = found  # (under what it was read with: the same, unless a
        # neighbour joined or a description changed in between; its locks are the current code's)
    return found, now


def _rules_of(session: DbSession, segment_id: int, digest: str) -> targeting.RuleSet:
    """A rule segment's rules, parsed once per process per distinct stored text (its md5 read
    with the segment: ids and versions repeat across databases reset, a digest does not lie)."""
    found = _parsed_by_digest.get(digest)
    if found is None:
        found = ruleset_of(session.scalar(select(Segment.rules).where(Segment.id == segment_id)))
        if len(_parsed_by_digest) > 10_000:
            _parsed_by_digest.clear()
        _parsed_by_digest[digest] = found
    return found


# The rule-set lock shared, as an expression: a trait write takes it in its read of the traits
# (services.traits.store.write), then calls rematch with ``rule_set_locked``.
RULE_SET_SHARED_SQL = "pg_advisory_xact_lock_shared({}, {})".format(*rollout_state.RULE_SET_LOCK)

SMALL = 64  # users evaluated one by one below this (NumPy's per-call cost is more than the hashing)


def matching(
    segment: RuleSegment, users: Sequence[tuple[int, Traits]], hashes: Mapping[int, int] | None = None
) -> list[int]:
    """The users (id, traits) the segment covers: its rules match their traits and their bucket
    is in its rollout. ``hashes``: the users' scheme 2 hashes (rollout.user_hash), when the
    caller evaluates many segments for the same few users."""
    coverage = segment.coverage
    if not coverage.ranges:
        return []
    matched = [user for user, traits in users if segment.ruleset.match(traits) is not None]
    if not matched:
        return []
    if len(matched) < SMALL and coverage.scheme == rollout.SCHEME:
        return [
            u
            for u in matched
            if rollout.covers_hashed(coverage, hashes[u] if hashes is not None else rollout.user_hash(u))
        ]
    inside = rollout.covers_many(coverage, matched)
    return [user for user, hit in zip(matched, inside.tolist(), strict=True) if hit]


@dataclass
class Rematched:
    added: int = 0
    removed: int = 0


def rematch(
    session: DbSession,
    changed: Sequence[tuple[int, Traits | None]],
    actor: str,
    changed_at: datetime,
    *,
    rule_set_locked: bool = False,
) -> Rematched:
    """Re-match the rule segments for users whose traits just changed (user id, traits after:
    None when they have none any more) at ``changed_at`` (their trait_events' instant: each
    history row names it as its cause), in the caller's transaction, which holds the users'
    locks (``services.traits.store.write``) and, ``rule_set_locked``, the rule-set lock shared
    already (RULE_SET_SHARED_SQL, taken with its read of the traits: one round trip fewer).
    Returns the rows added and removed."""
    if not changed:
        return Rematched()
    # The set of rule segments, shared (no change of rules, percentage, group or mode commits
    # while this runs: one that waited commits after, and its re-evaluation sees these traits),
    # then their and their groups' bulk locks, shared (a chunk of a re-evaluation running now
    # holds its segment's exclusive: it sees these traits, or these rows see its rows), and the
    # clock read once they are held; the rule segments as of a snapshot taken after the
    # rule-set lock (lock_scope: none of them can change until this transaction ends).
    if not rule_set_locked:
        rollout_state.lock_rule_set(session, shared=True)
    scope, now = lock_scope(session)
    segments = scope.segments
    done = Rematched()
    gone = sorted({user for user, after in changed if after is None})
    if gone:  # no traits: no rule matches at all (rows of segments without rules included)
        added, removed = membership_store.set_matches(
            session, gone, None, [], now, actor, RuleCause.TRAITS, changed_at
        )
        done.added, done.removed = done.added + added, done.removed + removed
    kept = sorted(((user, after) for user, after in changed if after is not None), key=lambda pair: pair[0])
    if kept and segments:
        hashes = {user: rollout.user_hash(user) for user, _ in kept} if len(kept) < SMALL else None
        pairs = [(user, s.id) for s in segments for user in matching(s, kept, hashes)]
        pairs.sort()
        added, removed = membership_store.set_matches(
            session,
            [user for user, _ in kept],
            [s.id for s in segments],
            pairs,
            now,
            actor,
            RuleCause.TRAITS,
            changed_at,
        )
        done.added, done.removed = done.added + added, done.removed + removed
    return done


def reevaluate_chunk(session: DbSession, operation: BulkOperation) -> bool:
    """One chunk of a re-evaluation operation in the caller's transaction (cursor, counts and
    phase change with it); False when it is done — or superseded: the segment's rules version
    moved on (a newer operation does the work), or the segment was deleted (a restore queues a
    new one)."""
    assert operation.segment_id is not None and operation.rules_version is not None
    if operation.phase == SWITCH_PASS:
        _switch(session, operation)
        return False
    segment = session.scalar(
        select(Segment)
        .where(Segment.id == operation.segment_id, Segment.is_live)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
    if segment is None or segment.rules_version != operation.rules_version:
        operation.error = (
            "superseded: the segment was deleted" if segment is None else "superseded by a newer change"
        )
        return False
    group_salt = (
        session.scalar(select(ExclusionGroup.salt).where(ExclusionGroup.name == segment.exclusion_group))
        if segment.exclusion_group
        else None
    )
    neighbours = [segment.id]
    if segment.exclusion_group is not None:
        neighbours = list(
            session.scalars(
                select(Segment.id).where(Segment.is_live, Segment.exclusion_group == segment.exclusion_group)
            )
        )
    membership_store.lock_segments_bulk(session, sorted({segment.id, *neighbours}))
    now = clock(session)
    users, matched = _next_chunk(session, segment, group_salt, operation.cursor)
    if users:
        added, removed = membership_store.set_matches(
            session,
            users,
            [segment.id],
            [(u, segment.id) for u in matched],
            now,
            operation.actor,
            RuleCause.RULES,
            operation.created_at,  # the instant of the segment's change (start_reevaluation)
        )
        operation.added += added
        operation.removed += removed
        operation.done += len(users)
        operation.total = max(operation.total, operation.done)
        operation.cursor = users[-1]
    if len(users) == CHUNK:
        return True
    if segment.rules is not None and not segment.rule_mode:  # a first rule set: switch once all are in
        operation.phase = SWITCH_PASS
        return True
    return False


# Conditions PostgreSQL tests for less than decoding the traits costs in Python (a date or
# version condition costs more in SQL: a chunk with them decodes the traits and matches them here)
SQL_KINDS = frozenset(targeting.Kind) - {targeting.Kind.DATE, targeting.Kind.VERSION}


def _next_chunk(
    session: DbSession, segment: Segment, group_salt: str | None, cursor: int
) -> tuple[list[int], list[int]]:
    """The next CHUNK users with traits after ``cursor`` (by id), and those of them the segment
    covers now (its rules match, its rollout has their bucket; nobody without rules). Rules of
    SQL_KINDS are tested in the query (``RuleSet.sql``; an inexact filter's rows confirmed with
    ``match``): decoding every user's traits in Python was half of a chunk's time."""
    column, user = UserTraits.__table__.c.traits, UserTraits.__table__.c.user_id
    after = select(user).where(user > cursor).order_by(user).limit(CHUNK)
    if segment.rules is None:
        return [int(u) for u in session.scalars(after)], []
    evaluated = _rule_segment(segment, group_salt)
    ruleset = evaluated.ruleset
    if any(c.kind not in SQL_KINDS for rule in ruleset.rules for c in rule):
        rows = [(int(u), traits) for u, traits in session.execute(after.add_columns(column))]
        return [u for u, _ in rows], matching(evaluated, rows)
    found = ruleset.sql(column)
    hit = found.where if found.exact else case((found.where, column))  # (traits only to confirm)
    pairs = session.execute(after.add_columns(hit)).all()
    hits = [
        int(u)
        for u, tested in pairs
        if (tested is True if found.exact else tested is not None and ruleset.match(tested) is not None)
    ]
    inside = rollout.covers_many(evaluated.coverage, hits).tolist()
    return [int(u) for u, _ in pairs], [u for u, ok in zip(hits, inside, strict=True) if ok]


def _switch(session: DbSession, operation: BulkOperation) -> None:
    """A plain segment's first rules have been evaluated for every user with traits: it answers
    by them from this instant (its own transaction, the segment and its group locked exclusive
    as a rollout change locks them; trait changes meanwhile kept its rows exact)."""
    assert operation.segment_id is not None
    locked = rollout_state.lock_scope(session, operation.segment_id)
    segment = locked.get(operation.segment_id)
    if segment is None or segment.rules_version != operation.rules_version or segment.rules is None:
        operation.error = "superseded by a newer change"
        return
    rollout_state.lock_rule_set(session)  # before the clock (see rematch)
    rollout_state.switch_rule_mode(session, segment, True, operation.actor, clock(session))


def count_matching(session: DbSession, rules: Any) -> int:
    """How many users with traits the rules match (before any rollout): the API's count, in SQL
    (``RuleSet.sql``), each row of an inexact filter (a superset) confirmed with ``match``."""
    ruleset = ruleset_of(rules)
    found = ruleset.sql(UserTraits.__table__.c.traits)
    if found.exact:
        return int(session.scalar(select(func.count()).select_from(UserTraits).where(found.where)) or 0)
    return sum(1 for _ in confirmed_matches(session, ruleset))


def confirmed_matches(session: DbSession, ruleset: targeting.RuleSet) -> Iterator[int]:
    """The ids of the users with traits ``ruleset`` matches, by id, for a filter that is not
    exact in SQL: its candidates (``RuleSet.sql``, a superset) each confirmed with ``match``."""
    column = UserTraits.__table__.c.traits
    rows = session.execute(
        select(UserTraits.user_id, column)
        .where(ruleset.sql(column).where)
        .order_by(UserTraits.user_id)
        .execution_options(yield_per=2_000)
    )
    return (int(user) for user, traits in rows if ruleset.match(traits) is not None)


def covered_users(session: DbSession, segment_id: int, user_ids: Sequence[int]) -> list[int]:
    """Which of ``user_ids`` have a rule match row of the segment (its coverage in rule mode)."""
    if not user_ids:
        return []
    return list(
        session.scalars(
            text(
                "SELECT user_id FROM rule_matches WHERE segment_id = :segment "
                "AND user_id = ANY(CAST(:ids AS bigint[])) ORDER BY user_id"
            ),
            {"segment": segment_id, "ids": list(user_ids)},
        )
    )


# -- the rule builder's reads (the dashboard's segment page, issue 29 stage 4) --------------------

AUDIENCE_SAMPLE = 10  # matching user ids the builder names
# a live count that takes longer says so instead (date, version or any-case rules over 1M users)
AUDIENCE_TIMEOUT_MS = 3_000


@dataclass(frozen=True)
class Audience:
    """Who rules match now, before any rollout: ``matching`` of ``with_traits`` users with
    stored traits, and the first few of them by id (``sample``)."""

    matching: int
    with_traits: int
    sample: tuple[int, ...]


def audience(
    session: DbSession, rules: Any, sample: int = AUDIENCE_SAMPLE, timeout_ms: int = AUDIENCE_TIMEOUT_MS
) -> Audience | None:
    """How many users with traits ``rules`` (raw: RulesInvalid if they do not validate) match, of
    how many, and the first ``sample`` of them by id: ``RuleSet.sql`` in two statements (the
    counts, then the sample with a LIMIT), an inexact filter's rows confirmed with ``match``. None
    when it takes longer than ``timeout_ms`` (a savepoint keeps the caller's transaction usable)."""
    ruleset = targeting.parse(rules)
    found = ruleset.sql(UserTraits.__table__.c.traits)
    traits_table = UserTraits.__table__
    previous = session.execute(text("SELECT current_setting('statement_timeout')")).scalar_one()
    try:
        with session.begin_nested():
            session.execute(
                text("SELECT set_config('statement_timeout', :value, true)"),
                {"value": f"{int(timeout_ms)}ms"},
            )
            if found.exact:
                matching, total = session.execute(
                    select(func.count().filter(found.where), func.count()).select_from(traits_table)
                ).one()
                ids = tuple(
                    int(u)
                    for u in session.scalars(
                        select(traits_table.c.user_id)
                        .where(found.where)
                        .order_by(traits_table.c.user_id)
                        .limit(sample)
                    )
                )
            else:  # a superset: every candidate confirmed in Python, in id order, within the time too
                deadline = time.monotonic() + timeout_ms / 1000
                total = session.scalar(select(func.count()).select_from(traits_table)) or 0
                matching, picked = 0, list[int]()
                rows = session.execute(
                    select(traits_table.c.user_id, traits_table.c.traits)
                    .where(found.where)
                    .order_by(traits_table.c.user_id)
                    .execution_options(yield_per=2_000)
                )
                for seen, (user, traits) in enumerate(rows, 1):
                    if ruleset.match(traits) is not None:
                        matching += 1
                        if len(picked) < sample:
                            picked.append(int(user))
                    if seen % 2_000 == 0 and time.monotonic() > deadline:
                        rows.close()
                        raise _TooSlow
                ids = tuple(picked)
            session.execute(text("SELECT set_config('statement_timeout', :value, true)"), {"value": previous})
    except (OperationalError, _TooSlow) as exc:
        if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) != "57014":
            raise  # (57014 query_canceled: the statement timeout)
        session.execute(text("SELECT set_config('statement_timeout', :value, true)"), {"value": previous})
        return None
    return Audience(int(matching or 0), int(total or 0), ids)


class _TooSlow(Exception):
    """Confirming an inexact filter's rows in Python took longer than the count may."""


def trait_key_suggestions(session: DbSession, prefix: str = "", limit: int = 100) -> list[str]:
    """Trait keys seen so far (``trait_keys``) that start with ``prefix``, in order, at most
    ``limit``: the rule builder's suggestions."""
    query = select(TraitKey.key).order_by(TraitKey.key).limit(limit)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(TraitKey.key.like(f"{escaped}%", escape="\\"))
    return list(session.scalars(query))
