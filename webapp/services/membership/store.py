"""Every membership write, each with its history rows, as set-based PostgreSQL statements.

This module is the only writer of ``memberships``, ``rollout_exclusions`` and
``membership_events``. Each write is one statement (data-modifying CTEs, ``INSERT ... ON
CONFLICT``) that appends its ``membership_events`` rows through :func:`_events`; history rows
are stamped with ``clock_timestamp()`` taken after the row locks, so history order is commit
order (callers may pass an explicit time ``at``: backfills and tests with a fixed clock).

Locking, in one global order so that no two writers deadlock:
1. the user (a transaction-scoped advisory lock, :func:`lock_user`; many: :func:`lock_users`,
   ascending) for per-user changes and trait writes;
2. segment rows, in id order (share for per-user changes and bulk chunks, exclusive for
   delete and rollout changes);
3. the segments' **bulk locks**, in segment id order, and within a segment in this order:
   its BULK_LOCK_SPACE key, its WRITE_LOCK_SPACE key, its range keys of level 0 ascending, of
   level 1 ascending (two-int advisory keys; a range key is (segment, level, user id >>
   RANGE_SHIFTS[level])). Who takes what:

   - a bulk chunk (add, remove, a replace's two passes, a restore's chunk): BULK_LOCK_SPACE
     exclusive (chunks of one segment run one at a time), then — its users known before its
     locks: the staged ids, or the window ``after < user_id <= upto`` it reads again after
     them — the range keys covering them exclusive at the finest level at which they are at
     most RANGE_KEYS, with WRITE_LOCK_SPACE shared; or, too spread out or not known before
     (a sync replace, whose members may all leave), WRITE_LOCK_SPACE exclusive: the whole
     segment (:func:`lock_segment_bulk`, taken once per transaction);
   - a per-user change of user X: per segment WRITE_LOCK_SPACE shared and X's range key at
     *every* level shared (:func:`lock_segments_for_user`). So it waits for a chunk whose
     ranges hold X (whatever level the chunk took) or that holds the whole segment, and for
     nothing else: a chunk and a per-user change of one user never interleave (their decisions
     and stamps are ordered), while writes of users outside the chunk go on (issue 28 item 3).
     A change of more than RANGE_SEGMENTS segments (up to MAX_ITEMS_PER_CHANGE) takes their
     BULK_LOCK_SPACE keys shared instead, as before ranges: it waits for any of their chunks,
     and holds one lock-table entry per segment, not three;
   - a re-evaluation chunk (its users are read after its locks), the sync restore: the whole
     segment, BULK_LOCK_SPACE and WRITE_LOCK_SPACE exclusive (:func:`lock_segments_bulk`);
   - a trait write: BULK_LOCK_SPACE shared for its rule scope (:func:`lock_segments_shared`,
     after the rule-set lock), so it waits for every chunk of those segments as before (a
     chunk's explicit rows and the trait write's rule rows decide each other's visibility);
     the switch of a segment's mode takes BULK_LOCK_SPACE exclusive (segments.rollout_state).

   Everyone takes these keys in the order above and holds them to the end of the transaction,
   so no cycle can close among them. One exception, safe: several chunks in one transaction (a
   request's replace, tests) may take more range keys of a level after rows, in any order: a
   per-user change holds one key of each level and waits for a chunk only for its own user's
   key, or for rows of its user, which the chunk holds only with that key; so it can hold a key
   such a chunk then waits for only while waiting on a coarser level the chunk does not hold.
   Hence :func:`lock_segment_bulk` never takes a finer level after a coarser one (it takes the
   coarser), and a caller that may need the whole segment takes it first (the sync replace);
4. membership rows: ascending segment id within a user (per-user changes), ascending user id
   within one segment (bulk chunks). A per-user change waits for a chunk's row only if the
   chunk covers its user — and then it waited at step 3 already; a bulk chunk only waits
   within its own segment, so no wait cycle can close. The purge never waits: it skips rows
   another writer holds. (Rollout exclusion rows are taken like membership rows.)

Why ranges and not the users' own locks: a chunk of 5,000 users would hold 5,000 entries of the
server's shared lock table (max_locks_per_transaction x max_connections, 6,400 by default) —
a first version did, and ran out — while its ranges are at most RANGE_KEYS + 2. The chunks'
users are always one interval of ids (the staged ids and the windows are walked in id order), so
ranges lose little: a chunk of 5,000 dense ids holds two 4,096-id keys.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import bindparam, text
from sqlalchemy.orm import scoped_session

from webapp.models.enums import Reason, RuleCause
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.models.types import UTCDateTime
from webapp.services.common import DbSession
from webapp.services.reads.rule import MATCH_VISIBLE
from webapp.services.webhooks import outbox

EVENT_COLUMNS = "user_id, segment_id, segment_slug, action, reason, occurred_at, actor, visible"
RULE_EVENT_COLUMNS = EVENT_COLUMNS + ", cause, cause_at"  # a rule row names its cause (migration 0020)
TIMES = ("now", "at", "expiry", "cause_at")


@dataclass
class Counts:
    """Segment ids the user was added to, and those whose expiry changed."""

    added: set[int]
    updated: set[int]


def _events(select_sql: str, columns: str = EVENT_COLUMNS) -> str:
    """The CTEs writing a statement's history rows: ``ev_src`` (``select_sql``: the ``columns``,
    EVENT_COLUMNS or a rule row's RULE_EVENT_COLUMNS, then the membership's ``expires_at`` or
    NULL), ``ev`` inserting them into
    ``membership_events`` and, in the same statement, the ``membership.changed`` outbox rows for
    the subscriptions that want them (webhooks.outbox.MEMBERSHIP_OUTBOX, batched). Every
    statement writing history goes through here and ends its SELECT with OUTBOX_WRITTEN, read
    by :func:`_woken` (the one rule: no history row without its webhook events)."""
    return (
        f"ev_src ({columns}, expires_at) AS MATERIALIZED ({select_sql}),\n"
        f"ev AS (INSERT INTO membership_events ({columns}) SELECT {columns} FROM ev_src),"
        + outbox.MEMBERSHIP_OUTBOX.format(changes="ev_src")
    )


WRITTEN = outbox.OUTBOX_WRITTEN  # the last column of every statement writing history


def _woken(written: Any) -> None:
    """After a statement that wrote history: wake the webhook sender on commit if it wrote events."""
    outbox.wake_after_commit(int(written))


def membership_batch() -> int:
    """Changes per ``membership.changed`` delivery: WEBHOOK_MEMBERSHIP_BATCH (default 1000)."""
    if has_app_context():
        return max(1, int(current_app.config.get("WEBHOOK_MEMBERSHIP_BATCH", outbox.MEMBERSHIP_BATCH)))
    return outbox.MEMBERSHIP_BATCH


def _run(session: DbSession, sql: str, params: Mapping[str, Any]) -> Any:
    """Execute ``sql`` with every timestamp parameter bound as an aware UTC timestamptz."""
    times = [bindparam(name, type_=UTCDateTime) for name in TIMES if f":{name}" in sql]
    values = dict(params)
    if ":wh_batch" in sql:
        values["wh_batch"] = membership_batch()
    return session.execute(text(sql).bindparams(*times), values)


def lock_user(session: DbSession, user_id: int) -> None:
    """Serialise per-user changes: held until the transaction ends. (User ids use the
    one-bigint key space; other advisory locks here use the two-int one, which is distinct.)"""
    session.execute(text("SELECT pg_advisory_xact_lock(CAST(:user AS bigint))"), {"user": user_id})


def lock_users(session: DbSession, user_ids: Sequence[int]) -> None:
    """:func:`lock_user` for many users in one statement, in ascending id order (the order every
    multi-user holder takes them in, so two never wait on each other in a cycle): a trait
    import's chunk (services.traits.store). Each is one entry of the server's shared lock table
    (max_locks_per_transaction x max_connections slots), so callers keep the list to a chunk."""
    session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(u)) FROM "
            "(SELECT DISTINCT u FROM unnest(CAST(:users AS bigint[])) AS t(u) ORDER BY u) s"
        ),
        {"users": list(user_ids)},
    )


# A membership is written only when its expiry is after the instant its change happens
# (``:now``, read after the writer's locks): one that expired while its change waited for them
# was never live for any read, so neither its row nor its ``added`` history row is written (a
# row stamped after its own expiry would replay as an add after the removal: in for history,
# never in for reads). The restore's rows follow the same rule (_RESTORE).
ALIVE_AT_STAMP = "(expires_at IS NULL OR expires_at > :now)"


# -- one user ------------------------------------------------------------------------------

_UPSERT = """
WITH src AS (
    SELECT CAST(:user AS bigint) AS user_id, segment_id, expires_at
    FROM unnest(CAST(:segments AS int[]), CAST(:expires AS timestamptz[])) AS t(segment_id, expires_at)
    WHERE {alive}
    ORDER BY segment_id
),
up AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT user_id, segment_id, :now, expires_at FROM src
    ON CONFLICT (user_id, segment_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
        WHERE memberships.expires_at IS DISTINCT FROM EXCLUDED.expires_at
    RETURNING user_id, segment_id, (xmax = 0) AS inserted, expires_at,
              COALESCE(CAST(:at AS timestamptz), clock_timestamp()) AS at
),
unexcluded AS (
    DELETE FROM rollout_exclusions e USING src
    WHERE e.user_id = src.user_id AND e.segment_id = src.segment_id
),
{events}
SELECT segment_id, inserted, {written} FROM up
""".format(
    written=WRITTEN,
    alive=ALIVE_AT_STAMP,
    events=_events(
        "SELECT up.user_id, up.segment_id, s.slug, 'added', :reason, up.at, :actor, "
        "NOT (up.segment_id = ANY(CAST(:already_in AS int[]))), up.expires_at "
        "FROM up JOIN segments s ON s.id = up.segment_id WHERE up.inserted"
    ),
)

_REMOVE = """
WITH del AS (
    DELETE FROM memberships
    WHERE user_id = :user AND segment_id = ANY(CAST(:segments AS int[]))
    RETURNING segment_id
),
exc AS (
    INSERT INTO rollout_exclusions (user_id, segment_id, created_at)
    SELECT :user, sid, :now FROM unnest(CAST(:rollout_segments AS int[])) AS sid ORDER BY sid
    ON CONFLICT DO NOTHING
    RETURNING segment_id
),
gone AS (SELECT segment_id FROM del UNION SELECT segment_id FROM exc),
{events}
SELECT segment_id, {written} FROM gone
""".format(
    written=WRITTEN,
    events=_events(
        "SELECT :user, gone.segment_id, s.slug, 'removed', :reason, "
        "COALESCE(CAST(:at AS timestamptz), clock_timestamp()), :actor, "
        "gone.segment_id = ANY(CAST(:was_in AS int[])), CAST(NULL AS timestamptz) "
        "FROM gone JOIN segments s ON s.id = gone.segment_id"
    ),
)


def upsert(
    session: DbSession,
    user_id: int,
    expiries: Mapping[int, datetime | None],
    now: datetime,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
    already_in: Collection[int] = (),
) -> Counts:
    """Add the user to segments (segment id -> expiry) or update the expiry of ones they
    are in; one ``added`` event per new membership row, visible unless the user was
    ``already_in`` that segment (through its rollout: the answer does not change). Lifts
    rollout exclusions. An expiry not after ``now`` adds nothing (ALIVE_AT_STAMP)."""
    rows = _run(
        session,
        _UPSERT,
        {
            "user": user_id,
            "segments": list(expiries),
            "expires": list(expiries.values()),
            "now": now,
            "at": at,
            "reason": reason,
            "actor": actor,
            "already_in": list(already_in),
        },
    )
    counts, written = Counts(set(), set()), 0
    for segment_id, inserted, events in rows:
        (counts.added if inserted else counts.updated).add(segment_id)
        written = events  # (the same on every row: the statement's)
    _woken(written)
    return counts


def remove(
    session: DbSession,
    user_id: int,
    segment_ids: Sequence[int],
    rollout_segment_ids: Sequence[int],
    now: datetime,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
    was_in: Collection[int] = (),
) -> set[int]:
    """Remove a user from segments and exclude them from ``rollout_segment_ids``; returns the
    segments whose rows changed (one ``removed`` event each, visible for those the user
    ``was_in``: an exclusion of a user not in — a group held elsewhere — changes no answer)."""
    rows = _run(
        session,
        _REMOVE,
        {
            "user": user_id,
            "segments": list(segment_ids),
            "rollout_segments": list(rollout_segment_ids),
            "now": now,
            "at": at,
            "reason": reason,
            "actor": actor,
            "was_in": list(was_in),
        },
    )
    gone = {segment_id: written for segment_id, written in rows}
    _woken(max(gone.values(), default=0))
    return set(gone)


# -- one segment, many users (in chunks) ---------------------------------------------------

_UPSERT_MANY = """
WITH src AS (SELECT DISTINCT unnest(CAST(:users AS bigint[])) AS user_id
             FROM (SELECT CAST(:expiry AS timestamptz) AS expires_at) t WHERE {alive} ORDER BY 1),
up AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT user_id, :segment, :now, :expiry FROM src
    ON CONFLICT (user_id, segment_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
        WHERE memberships.expires_at IS DISTINCT FROM EXCLUDED.expires_at
    RETURNING user_id, (xmax = 0) AS inserted
),
unexcluded AS (
    DELETE FROM rollout_exclusions e USING src WHERE e.segment_id = :segment AND e.user_id = src.user_id
),
{events}
SELECT count(*) FILTER (WHERE shown), count(*) FILTER (WHERE NOT shown), {written} FROM (
    SELECT inserted AND NOT (user_id = ANY(CAST(:already_in AS bigint[]))) AS shown FROM up
) counted
""".format(
    written=WRITTEN,
    alive=ALIVE_AT_STAMP,
    events=_events(
        "SELECT user_id, :segment, :slug, 'added', :reason, COALESCE(CAST(:at AS timestamptz), clock_timestamp()), "
        ":actor, NOT (user_id = ANY(CAST(:already_in AS bigint[]))), CAST(:expiry AS timestamptz) "
        "FROM up WHERE inserted"
    ),
)


BULK_LOCK_SPACE = 3  # (3, segment): its bulk chunks one at a time; trait writes of it shared
WRITE_LOCK_SPACE = 6  # (6, segment): per-user changes shared; a chunk of the whole segment exclusive
RANGE_SHIFTS = (12, 22)  # user id >> shift: a range key per level (4,096 and 4,194,304 ids)
RANGE_KEYS = 64  # most range keys a chunk takes (of the finest level that fits), else the segment
RANGE_SEGMENTS = 16  # a per-user change of more segments takes their BULK_LOCK_SPACE shared instead


def upsert_many(
    session: DbSession,
    user_ids: Sequence[int],
    segment_id: int,
    slug: str,
    expiry: datetime | None,
    now: datetime,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
    already_in: Sequence[int] = (),
) -> tuple[int, int]:
    """Add many users to one segment, or update their expiry; returns (added, expiry updated).

    One chunk of a bulk add (the caller holds the segment share-locked). Its rows are taken in
    ascending user order, and chunks of one segment run one at a time (an advisory lock per
    segment), so they cannot deadlock with each other; per-user changes take rows in ascending
    segment order and a bulk chunk only ever waits within its one segment, so no wait cycle can
    form with them either. Rows expired but not yet purged end at their expiry first, so a
    re-add is a new add. ``already_in``: listed users in the segment through its rollout (their
    new explicit rows are stored, not shown, and counted as updated: the answer does not
    change). An ``expiry`` not after ``now`` adds nothing (ALIVE_AT_STAMP: a background chunk
    that runs after its operation's expiry)."""
    lock_segment_bulk(session, segment_id, user_span(user_ids))
    expire_batch(session, now, len(user_ids), segment_id=segment_id, user_ids=user_ids)
    added, updated, written = _run(
        session,
        _UPSERT_MANY,
        {
            "users": list(user_ids),
            "segment": segment_id,
            "slug": slug,
            "now": now,
            "expiry": expiry,
            "at": at,
            "reason": reason,
            "actor": actor,
            "already_in": list(already_in),
        },
    ).one()
    _woken(written)
    return int(added), int(updated)


_LOCK_MANY = """
SELECT user_id FROM memberships
WHERE segment_id = :segment AND user_id = ANY(CAST(:users AS bigint[]))
ORDER BY user_id FOR UPDATE
"""

_REMOVE_MANY = """
WITH del AS (
    DELETE FROM memberships
    WHERE segment_id = :segment AND user_id = ANY(CAST(:users AS bigint[]))
    RETURNING user_id
),
exc AS (
    INSERT INTO rollout_exclusions (user_id, segment_id, created_at)
    SELECT user_id, :segment, :now FROM unnest(CAST(:rollout_users AS bigint[])) AS t(user_id) ORDER BY user_id
    ON CONFLICT DO NOTHING
    RETURNING user_id
),
gone AS (
    SELECT user_id, true AS was_in FROM del
    UNION ALL
    SELECT exc.user_id, NOT EXISTS (
        SELECT 1 FROM memberships m JOIN segments s ON s.id = m.segment_id
        WHERE m.user_id = exc.user_id AND s.exclusion_group = :group AND s.id <> :segment
          AND s.{live_segment} AND (m.expires_at IS NULL OR m.expires_at > :now)
    ) FROM exc WHERE NOT EXISTS (SELECT 1 FROM del WHERE del.user_id = exc.user_id)
),
{events}
SELECT count(*), {written} FROM gone
""".format(
    written=WRITTEN,
    live_segment=LIVE_SEGMENT_SQL,
    events=_events(
        "SELECT user_id, :segment, :slug, 'removed', :reason, COALESCE(CAST(:at AS timestamptz), clock_timestamp()), "
        ":actor, was_in, CAST(NULL AS timestamptz) FROM gone"
    ),
)


def remove_many(
    session: DbSession,
    user_ids: Sequence[int],
    segment_id: int,
    slug: str,
    rollout_user_ids: Sequence[int],
    now: datetime,
    reason: Reason,
    actor: str,
    *,
    at: datetime | None = None,
    group: str | None = None,
) -> int:
    """Remove many users from one segment, each exactly as a per-user removal (:func:`remove`)
    would: the explicit membership goes, and a user the segment's rollout covers
    (``rollout_user_ids``, decided by the caller as the per-user change decides it) is
    excluded from it. Returns how many users left (one ``removed`` event each: an explicit
    member, or a rollout member newly excluded).

    One chunk of a bulk remove or replace (the caller holds the segment share-locked). Like
    :func:`upsert_many`: chunks of one segment run one at a time, rows are locked in ascending
    user order, and a row already expired (not yet purged) ends at its expiry first (``ttl``),
    so only live members count as removed. A newly excluded user who was not in (``group``:
    the segment's exclusion group, held by an explicit membership of another of its segments)
    gets a stored, not visible, row: the answer did not change."""
    lock_segment_bulk(session, segment_id, user_span(user_ids))
    expire_batch(session, now, len(user_ids), segment_id=segment_id, user_ids=user_ids)
    params = {
        "users": list(user_ids),
        "segment": segment_id,
        "slug": slug,
        "now": now,
        "at": at,
        "rollout_users": list(rollout_user_ids),
        "reason": reason,
        "actor": actor,
        "group": group,
    }
    _run(session, _LOCK_MANY, params)
    gone, written = _run(session, _REMOVE_MANY, params).one()
    _woken(written)
    return int(gone)


def lock_unlisted_members(
    session: DbSession,
    segment_id: int,
    *,
    listed: Sequence[int] | None = None,
    operation_id: object = None,
    after: int = 0,
    upto: int | None = None,
    added_before: datetime | None = None,
) -> list[int]:
    """The segment's members (live or not) with ``after < user_id <= upto`` that are not
    listed — in ``listed``, or in the operation's ``bulk_operation_ids`` — and, with
    ``added_before``, were added before it; their rows locked in ascending user order (the
    caller then removes them with :func:`remove_many`). A replace's removal pass. Its bulk lock
    covers the window's users (``upto`` given: the window is known before the lock, its rows are
    read after it), else the whole segment."""
    lock_segment_bulk(session, segment_id, (after + 1, upto) if upto is not None and upto > after else None)
    candidates: list[int] = []
    if listed is not None:
        unlisted = (
            "NOT EXISTS (SELECT 1 FROM unnest(CAST(:listed AS bigint[])) AS l(user_id) "
            "WHERE l.user_id = m.user_id)"
        )
    elif upto is not None:
        # A window of the removal pass: its members and the listed ids in the same range, each
        # an index range scan, the difference taken here. No anti-join for the planner to get
        # wrong on statistics older than the ids just staged or the rows just added (one such
        # window ran 72 s: docs/performance.md); the rows are then locked by their ids.
        window = {"segment": segment_id, "after": after, "upto": upto, "op": operation_id}
        members = _run(
            session, "SELECT user_id FROM memberships m WHERE " + _WINDOW.format(alias="m."), window
        ).scalars()
        staged = _run(
            session,
            "SELECT user_id FROM bulk_operation_ids WHERE operation_id = :op AND user_id > :after "
            "AND user_id <= :upto",
            window,
        ).scalars()
        candidates = sorted(set(members).difference(staged))
        if not candidates:
            return []
        unlisted = "m.user_id = ANY(CAST(:candidates AS bigint[]))"
    else:
        unlisted = (
            "NOT EXISTS (SELECT 1 FROM bulk_operation_ids b WHERE b.operation_id = :op "
            "AND b.user_id = m.user_id)"
        )
    sql = (
        f"SELECT m.user_id FROM memberships m WHERE m.segment_id = :segment AND m.user_id > :after "
        f"{'AND m.user_id <= :upto ' if upto is not None else ''}"
        f"{'AND m.added_at < :now ' if added_before is not None else ''}"
        f"AND {unlisted} ORDER BY m.user_id FOR UPDATE"
    )
    return list(
        _run(
            session,
            sql,
            {
                "segment": segment_id,
                "after": after,
                "upto": upto,
                "now": added_before,
                "listed": list(listed or ()),
                "op": operation_id,
                "candidates": candidates,
            },
        ).scalars()
    )


def lock_segments_shared(session: DbSession, segment_ids: Sequence[int]) -> None:
    """A trait write's side of the segments' bulk locks (membership.rules.rematch): BULK_LOCK_SPACE
    *shared* for its rule segments and their groups' other segments, in id order, so it waits
    for any bulk chunk or re-evaluation chunk of them and they for it (a chunk's explicit rows and
    a trait write's rule rows of one user decide each other's visibility). Per-user changes take
    :func:`lock_segments_for_user` instead."""
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock_shared(:space, s.id) "
            "FROM (SELECT DISTINCT unnest(CAST(:ids AS int[])) AS id ORDER BY 1 OFFSET 0) s"
        ),
        {"space": BULK_LOCK_SPACE, "ids": list(segment_ids)},
    )


def lock_segments_for_user(session: DbSession, segment_ids: Sequence[int], user_id: int) -> None:
    """A per-user change of ``user_id`` waits for a bulk chunk of any of its segments whose ids
    cover the user (and a chunk for the change): per segment, in id order, its WRITE_LOCK_SPACE
    key shared and the user's range key at every level of RANGE_SHIFTS shared (the module
    docstring). Taken after the segment rows, before the change reads its clock and its view.
    A change of more than RANGE_SEGMENTS segments takes each one's BULK_LOCK_SPACE key shared
    instead — one lock-table entry per segment, not three — and waits for any chunk of them."""
    keys: list[tuple[int, int, bool]] = []
    ids = sorted(set(segment_ids))
    for segment_id in ids:
        if len(ids) > RANGE_SEGMENTS:
            keys.append((BULK_LOCK_SPACE, segment_id, False))
            continue
        keys.append((WRITE_LOCK_SPACE, segment_id, False))
        keys += [
            (_range_space(segment_id, level), _int4(user_id >> shift), False)
            for level, shift in enumerate(RANGE_SHIFTS)
        ]
    _take(session, keys)


@dataclass(frozen=True)
class BulkHold:
    """What a chunk takes of one segment's bulk locks: the whole segment (``level`` None), or the
    ranges ``first`` … ``last`` (user id >> RANGE_SHIFTS[level]) of one level."""

    level: int | None
    first: int = 0
    last: int = 0


def bulk_hold(users: tuple[int, int] | None) -> BulkHold:
    """What a chunk of the users ``lo`` … ``hi`` (None: unknown, or every user) takes: the ranges
    of the finest level at which they are at most RANGE_KEYS, else the whole segment."""
    if users is not None:
        for level, shift in enumerate(RANGE_SHIFTS):
            first, last = users[0] >> shift, users[1] >> shift
            if last - first < RANGE_KEYS:
                return BulkHold(level, first, last)
    return BulkHold(None)


def user_span(user_ids: Sequence[int]) -> tuple[int, int] | None:
    """The lowest and highest of ``user_ids`` (None when empty): what a chunk of them covers."""
    return (min(user_ids), max(user_ids)) if user_ids else None


@dataclass
class _Held:
    """A segment's bulk locks this transaction holds: the whole segment, or range keys
    (level, int4 key)."""

    whole: bool = False
    keys: set[tuple[int, int]] = field(default_factory=set)


def _range_keys(level: int, first: int, last: int) -> set[tuple[int, int]]:
    return {(level, _int4(r)) for r in range(first, last + 1)}


def lock_segment_bulk(session: DbSession, segment_id: int, users: tuple[int, int] | None = None) -> None:
    """A bulk chunk's locks on its segment (held until the transaction ends): BULK_LOCK_SPACE
    exclusive (chunks of one segment run one at a time; trait writes of its rule scope wait), and
    either the user ranges covering ``users`` (lo, hi: every user the chunk may write or decide
    about) exclusive with WRITE_LOCK_SPACE shared, so that only per-user changes of users in those
    ranges wait for it — or, for ``users`` None or too spread out (:func:`bulk_hold`),
    WRITE_LOCK_SPACE exclusive: every per-user change of the segment waits, as before ranges.

    Once a transaction holds some of a segment's locks, a call for users already covered takes
    nothing, and one for more takes the range keys it lacks, of its level or — never a finer
    level after a coarser one — of the coarsest it holds (a per-user change holds one key of each
    level, so a chunk's keys of one level can be taken in any order: the module docstring). The
    whole segment after ranges is taken too, outside the order: only by a transaction that holds
    the segment's row exclusive (a restore after a deletion in one transaction: no per-user change
    can hold its WRITE_LOCK_SPACE key then, it takes the row first) or tests; a caller that may
    need the whole segment takes it first (the sync replace)."""
    holds = _holds(session)
    held = holds.get(segment_id, _Held())
    if held.whole:
        return
    if users is not None:
        for level, shift in enumerate(RANGE_SHIFTS):
            first, last = users[0] >> shift, users[1] >> shift
            if held.keys and last - first < RANGE_KEYS and _range_keys(level, first, last) <= held.keys:
                return
    want = bulk_hold(users)
    coarsest = max((level for level, _ in held.keys), default=0)
    if want.level is not None and want.level < coarsest:  # (not a finer level after a coarser one)
        assert users is not None
        shift = RANGE_SHIFTS[coarsest]
        if (users[1] >> shift) - (users[0] >> shift) < RANGE_KEYS:
            want = BulkHold(coarsest, users[0] >> shift, users[1] >> shift)
        else:
            want = BulkHold(None)
    keys: list[tuple[int, int, bool]] = []
    if not held.keys:
        keys.append((BULK_LOCK_SPACE, segment_id, True))
    if want.level is None:
        keys.append((WRITE_LOCK_SPACE, segment_id, True))
    elif not held.keys:
        keys.append((WRITE_LOCK_SPACE, segment_id, False))
    new: list[tuple[int, int]] = []
    if want.level is not None:
        new = sorted(_range_keys(want.level, want.first, want.last) - held.keys)
        keys += [(_range_space(segment_id, level), key, True) for level, key in new]
    _take(session, keys)
    holds[segment_id] = _Held(want.level is None, held.keys | set(new))


def _holds(session: DbSession) -> dict[int, _Held]:
    """The bulk locks this transaction has taken (segment id -> what of it), kept in the
    session's ``info`` for its current transaction."""
    own = session() if isinstance(session, scoped_session) else session
    transaction = own.get_transaction()
    kept = session.info.get("membership_bulk_locks")
    if kept is None or kept[0] is not transaction:
        kept = session.info["membership_bulk_locks"] = (transaction, {})
    return kept[1]


def _range_space(segment_id: int, level: int) -> int:
    """The first key of a segment's range locks of one level: negative, so apart from every
    other two-int advisory lock space (small positive constants)."""
    return -(segment_id * len(RANGE_SHIFTS) + level) - 1


def _int4(value: int) -> int:
    """``value`` folded into PostgreSQL's int4 (a user range beyond it shares its key with
    another range: one more wait, never one less)."""
    return (value + 2**31) % 2**32 - 2**31


def _take(session: DbSession, keys: Sequence[tuple[int, int, bool]]) -> None:
    """Two-int advisory locks (key1, key2, exclusive?) in the order given, in one statement."""
    session.execute(
        text(
            "SELECT count(CASE WHEN x THEN pg_advisory_xact_lock(k1, k2) "
            "ELSE pg_advisory_xact_lock_shared(k1, k2) END) FROM (SELECT k1, k2, x FROM "
            "unnest(CAST(:k1 AS int[]), CAST(:k2 AS int[]), CAST(:x AS boolean[])) WITH ORDINALITY "
            "AS t(k1, k2, x, n) ORDER BY n OFFSET 0) s"
        ),
        {"k1": [k[0] for k in keys], "k2": [k[1] for k in keys], "x": [k[2] for k in keys]},
    )


# Tables whose rows a chunked operation walks by segment, keyset on (segment_id, user_id): each
# has an index on exactly that (memberships: ix_memberships_segment_user; retired_memberships:
# its primary key; rollout_exclusions: ix_rollout_exclusions_segment_user).
WINDOWED = ("memberships", "retired_memberships", "rollout_exclusions")


def segment_window(
    session: DbSession, table: str, segment_id: int, after: int, limit: int
) -> tuple[int, int]:
    """The next window of a segment's rows in ``table`` (one of WINDOWED) after user id ``after``:
    (rows in it, up to ``limit``; its last user id, ``after`` when empty). An ordered index-only
    range scan of the ``(segment_id, user_id)`` index whatever the statistics say, and no walk
    over the dead entries of windows already done. A chunk then works on ``after < user_id <=
    last``: a plain range (``_WINDOW``), so its plan cannot turn into a nested loop over the
    whole segment on stale statistics — what stalled a 1M-member delete for minutes (a
    ``DELETE … USING (SELECT … LIMIT)`` planned as a nested loop when the segment's rows were
    newer than the last ANALYZE: docs/performance.md)."""
    assert table in WINDOWED
    seen, last = session.execute(
        text(
            f"SELECT count(*), max(user_id) FROM (SELECT user_id FROM {table} WHERE segment_id = :segment "
            "AND user_id > :after ORDER BY user_id LIMIT :limit) w"
        ),
        {"segment": segment_id, "after": after, "limit": limit},
    ).one()
    return int(seen), int(last) if seen else after


_WINDOW = "{alias}segment_id = :segment AND {alias}user_id > :after AND {alias}user_id <= :upto"


def remove_for_deleted_segment(
    session: DbSession,
    segment_id: int,
    slug: str,
    deleted_at: datetime,
    actor: str,
    *,
    after: int = 0,
    upto: int | None = None,
) -> int:
    """Remove memberships of a deleted segment — all, or the window ``after < user_id <= upto``
    (a chunk: :func:`segment_window`) — each with its history row stamped at the deletion: rows
    that had expired by then left at their expiry (``ttl``), the others at the deletion
    (``segment_deleted``) and are kept in ``retired_memberships`` for a restore. Nobody else
    writes these rows (the segment is no longer live; the purge leaves them alone). Its rollout
    exclusions stay where they are (a restore needs them; reads ignore a deleted segment's
    rows). Returns how many rows went."""
    params = {
        "segment": segment_id,
        "slug": slug,
        "now": deleted_at,
        "actor": actor,
        "after": after,
        "upto": upto,
    }
    where = _WINDOW.format(alias="m.") if upto is not None else "m.segment_id = :segment"
    gone, written = _run(
        session,
        """
WITH del AS (DELETE FROM memberships m WHERE {where} RETURNING m.user_id, m.added_at, m.expires_at),
kept AS (INSERT INTO retired_memberships (segment_id, user_id, added_at, expires_at)
         SELECT :segment, user_id, added_at, expires_at FROM del
         WHERE expires_at IS NULL OR expires_at > :now ORDER BY user_id
         ON CONFLICT (segment_id, user_id) DO UPDATE SET added_at = EXCLUDED.added_at,
             expires_at = EXCLUDED.expires_at),
{events}
SELECT count(*), {written} FROM del
""".format(
            where=where,
            written=WRITTEN,
            events=_events(
                "SELECT user_id, :segment, :slug, 'removed', "
                "CASE WHEN expires_at <= :now THEN 'ttl' ELSE 'segment_deleted' END, "
                "CASE WHEN expires_at <= :now THEN expires_at ELSE :now END, "
                "CASE WHEN expires_at <= :now THEN 'system' ELSE :actor END, true, "
                "CASE WHEN expires_at <= :now THEN expires_at END FROM del"
            ),
        ),
        params,
    ).one()
    _woken(written)
    return int(gone)


def retired_ids(session: DbSession, segment_id: int, limit: int | None = None, after: int = 0) -> list[int]:
    """The next (lowest) user ids after ``after`` a deleted segment's deletion kept, for a
    restore's chunk (keyset: the windows done are gone, their dead index entries not walked)."""
    return list(
        _run(
            session,
            "SELECT user_id FROM retired_memberships WHERE segment_id = :segment AND user_id > :after "
            "ORDER BY user_id LIMIT :limit",
            {"segment": segment_id, "limit": limit, "after": after},
        ).scalars()
    )


_RESTORE = """
WITH gone AS (
    DELETE FROM retired_memberships r
    WHERE r.segment_id = :segment AND r.user_id = ANY(CAST(:users AS bigint[]))
    RETURNING r.user_id, r.added_at, r.expires_at
),
src AS (
    SELECT g.user_id, g.added_at, g.expires_at FROM gone g
    WHERE (g.expires_at IS NULL OR g.expires_at > :now)
      AND NOT EXISTS (
        SELECT 1 FROM memberships m JOIN segments s ON s.id = m.segment_id
        WHERE m.user_id = g.user_id AND s.exclusion_group = :group AND s.id <> :segment
          AND s.{live_segment} AND (m.expires_at IS NULL OR m.expires_at > :now))
    ORDER BY g.user_id
),
up AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT user_id, :segment, added_at, expires_at FROM src
    ON CONFLICT (user_id, segment_id) DO NOTHING
    RETURNING user_id, expires_at
),
unexcluded AS (
    DELETE FROM rollout_exclusions e USING up WHERE e.segment_id = :segment AND e.user_id = up.user_id
),
{events}
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM up), {written}
""".format(
    written=WRITTEN,
    live_segment=LIVE_SEGMENT_SQL,
    events=_events(
        "SELECT user_id, :segment, :slug, 'added', 'restored', COALESCE(CAST(:at AS timestamptz), clock_timestamp()), "
        ":actor, NOT (user_id = ANY(CAST(:already_in AS bigint[]))), expires_at FROM up"
    ),
)


def restore_members(
    session: DbSession,
    segment_id: int,
    slug: str,
    user_ids: Sequence[int],
    now: datetime,
    actor: str,
    *,
    group: str | None,
    at: datetime | None = None,
    already_in: Sequence[int] = (),
) -> tuple[int, int]:
    """Bring back the kept memberships of ``user_ids`` (a restored segment's chunk, the caller
    holding its bulk lock): rows still live at ``now`` return with their ``added_at`` and
    expiry, each with an ``added`` · ``restored`` history row (not visible for ``already_in``:
    users in through the rollout already); rows whose expiry passed while the segment was
    deleted are dropped (history already has them leaving at the deletion); a user who holds
    another segment of ``group`` explicitly, or is a member again already, is left as they
    are. Returns (kept rows taken, memberships restored)."""
    taken, restored, written = _run(
        session,
        _RESTORE,
        {
            "segment": segment_id,
            "slug": slug,
            "users": list(user_ids),
            "now": now,
            "at": at,
            "actor": actor,
            "group": group,
            "already_in": list(already_in),
        },
    ).one()
    _woken(written)
    return int(taken), int(restored)


def drop_retired(session: DbSession, segment_id: int, limit: int) -> int:
    """Delete up to ``limit`` of a deleted segment's kept rows (memberships, then exclusions):
    the purge once its restore window has passed. Returns how many rows went."""
    gone = 0
    for table in ("retired_memberships", "rollout_exclusions"):
        if gone < limit:
            seen, upto = segment_window(session, table, segment_id, 0, limit - gone)
            if seen:
                gone += _run(
                    session,
                    f"DELETE FROM {table} WHERE " + _WINDOW.format(alias=""),
                    {"segment": segment_id, "after": 0, "upto": upto},
                ).rowcount
    return int(gone)


# -- TTL expiry ----------------------------------------------------------------------------

_EXPIRE = """
WITH victims AS (
    SELECT user_id, segment_id FROM memberships
    WHERE expires_at <= :now {scope}
      AND segment_id IN (SELECT id FROM segments WHERE {live_segment})
    ORDER BY expires_at LIMIT :limit
    FOR UPDATE OF memberships SKIP LOCKED
),
del AS (
    DELETE FROM memberships m USING victims v
    WHERE m.user_id = v.user_id AND m.segment_id = v.segment_id
    RETURNING m.user_id, m.segment_id, m.expires_at
),
{events}
SELECT count(*), {written} FROM del
"""
_EXPIRE_EVENTS = _events(
    "SELECT del.user_id, del.segment_id, s.slug, 'removed', 'ttl', del.expires_at, 'system', true, del.expires_at "
    "FROM del JOIN segments s ON s.id = del.segment_id"
)


def expire_batch(
    session: DbSession,
    now: datetime,
    limit: int,
    *,
    user_id: int | None = None,
    segment_id: int | None = None,
    user_ids: Sequence[int] | None = None,
) -> int:
    """Delete up to ``limit`` memberships expired at ``now``, skipping rows another
    transaction holds; each leaves a ``ttl`` event stamped with its true expiry time.
    Returns how many were removed (0: nothing expired is left that is not locked)."""
    scope, params = "", {"now": now, "limit": limit}
    if user_id is not None:
        scope += " AND user_id = :user"
        params["user"] = user_id
    if segment_id is not None:
        scope += " AND segment_id = :segment"
        params["segment"] = segment_id
    if user_ids is not None:
        scope += " AND user_id = ANY(CAST(:users AS bigint[]))"
        params["users"] = list(user_ids)
    sql = _EXPIRE.format(scope=scope, events=_EXPIRE_EVENTS, live_segment=LIVE_SEGMENT_SQL, written=WRITTEN)
    gone, written = _run(session, sql, params).one()
    _woken(written)
    return int(gone)


# -- rule matches (issue 29) ---------------------------------------------------------------

# Does a rule match row written or deleted now move the user's answer? (``reads.rule.MATCH_VISIBLE``)
_MATCH_EVENTS = _events(
    f"SELECT c.user_id, c.segment_id, s.slug, c.action, 'rule', c.at, :actor, {MATCH_VISIBLE}, "
    "CAST(:cause AS varchar), :cause_at, CAST(NULL AS timestamptz) "
    "FROM c JOIN segments s ON s.id = c.segment_id",
    RULE_EVENT_COLUMNS,
)

_SET_MATCHES = f"""
WITH want AS (
    SELECT DISTINCT user_id, segment_id
    FROM unnest(CAST(:pair_users AS bigint[]), CAST(:pair_segments AS int[])) AS t(user_id, segment_id)
),
del AS (
    DELETE FROM rule_matches r
    WHERE r.user_id = ANY(CAST(:users AS bigint[]))
      AND (CAST(:all AS boolean) OR r.segment_id = ANY(CAST(:segments AS int[])))
      AND NOT EXISTS (SELECT 1 FROM want w WHERE w.user_id = r.user_id AND w.segment_id = r.segment_id)
    RETURNING r.user_id, r.segment_id
),
ins AS (
    INSERT INTO rule_matches (user_id, segment_id, since)
    SELECT user_id, segment_id, :now FROM want ORDER BY user_id, segment_id
    ON CONFLICT (user_id, segment_id) DO NOTHING
    RETURNING user_id, segment_id
),
c AS (
    SELECT user_id, segment_id, 'removed' AS action, CAST(:now AS timestamptz) AS at FROM del
    UNION ALL
    SELECT user_id, segment_id, 'added', CAST(:now AS timestamptz) FROM ins
),
{_MATCH_EVENTS}
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM del), {WRITTEN}
"""


def set_matches(
    session: DbSession,
    user_ids: Sequence[int],
    segment_ids: Sequence[int] | None,
    matched: Sequence[tuple[int, int]],
    now: datetime,
    actor: str,
    cause: RuleCause,
    cause_at: datetime,
) -> tuple[int, int]:
    """Make the rule match rows of ``user_ids`` in ``segment_ids`` (None: every segment they have
    a row of) exactly the ``matched`` (user, segment) pairs, each row written or deleted with its
    ``rule`` history row stamped ``now`` (read by the caller after its locks) and naming its
    ``cause`` and that change's instant ``cause_at``. The one writer of ``rule_matches``: a trait
    change (its users, every live rule segment; a user whose traits are gone, None; cause
    ``traits`` at the trait change's instant) and a re-evaluation chunk (its users, its one
    segment; cause ``rules`` at the instant of the segment's change). Returns (rows added, rows
    removed)."""
    added, removed, written = _run(
        session,
        _SET_MATCHES,
        {
            "users": list(user_ids),
            "all": segment_ids is None,
            "segments": list(segment_ids or ()),
            "pair_users": [u for u, _ in matched],
            "pair_segments": [s for _, s in matched],
            "now": now,
            "actor": actor,
            "cause": cause.value,
            "cause_at": cause_at,
        },
    ).one()
    _woken(written)
    return int(added), int(removed)


def lock_segments_bulk(session: DbSession, segment_ids: Sequence[int]) -> None:
    """:func:`lock_segment_bulk` of the whole segment for several segments, in id order (a
    re-evaluation chunk: its segment and the other live segments of its exclusion group, whose
    explicit rows decide whether its rows move an answer; its users are read after its locks)."""
    for segment_id in sorted(set(segment_ids)):
        lock_segment_bulk(session, segment_id)
