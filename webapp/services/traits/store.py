"""The only writer of ``user_traits``, ``trait_keys`` and ``trait_events``: :func:`write`.

Every trait change — a per-user PUT, PATCH or DELETE, each chunk of an import — is one call of
:func:`write`, inside the caller's transaction. It takes the users' per-user lock (the one
membership writes take, ``membership.store.lock_user``), reads their traits under it, decides
the new ones, writes them with the history rows (which keys were set or deleted, by whom; never
the values) and the keys seen, and returns, for every user whose traits changed, the old and the
new traits (:class:`TraitChange`). Stage 2 of issue 29 re-matches rule segments from exactly
there, so a trait change and the membership changes it implies commit together.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text

from webapp.models.enums import TraitAction, TraitImportMode
from webapp.models.types import UTCDateTime
from webapp.rules import MAX_TRAITS_PER_USER
from webapp.services.common import DbSession
from webapp.services.membership import rules as rule_matches
from webapp.services.membership import store as membership_store

Traits = dict[str, Any]  # a JSON object of scalars (webapp.rules.trait_problems)
CLEAR = "clear"  # a TraitWrite's mode: every trait of the user removed (DELETE)


@dataclass(frozen=True)
class TraitWrite:
    """What one user's traits should become: ``traits`` replacing them (REPLACE), merged into
    them (MERGE: a None value deletes its key), or none at all (CLEAR: ``traits`` unused).
    Validated by the caller (webapp.rules.trait_problems)."""

    user_id: int
    traits: Mapping[str, Any]
    mode: str  # TraitImportMode value, or CLEAR


@dataclass
class TraitChange:
    """One user's traits changed: before and after (None: no stored traits), and the keys."""

    user_id: int
    before: Traits | None
    after: Traits | None
    set_keys: list[str]
    deleted_keys: list[str]


@dataclass
class WriteResult:
    changed: list[TraitChange] = field(default_factory=list)
    created: int = 0  # users who had no stored traits before
    unchanged: int = 0  # users whose traits were already what was asked
    too_many: list[int] = field(default_factory=list)  # merges left out: over MAX_TRAITS_PER_USER keys
    at: datetime | None = None  # the instant every row was stamped with
    rules_added: int = 0  # rule match rows written (membership.rules.rematch)
    rules_removed: int = 0  # rule match rows deleted
    # ``stored`` (write's argument): each user's traits and updated_at as stored after the write
    # (read back from the write statement; unchanged users as read; none stored: absent)
    stored: dict[int, tuple[Traits, datetime]] = field(default_factory=dict)


def same(a: object, b: object) -> bool:
    """Equal as JSON values: ``1``, ``1.0`` and ``true`` are three different traits."""
    return type(a) is type(b) and a == b


def decide(before: Traits | None, wanted: TraitWrite) -> Traits | None:
    """The user's traits after ``wanted`` (None: no stored traits)."""
    if wanted.mode == CLEAR:
        return None
    if wanted.mode == TraitImportMode.REPLACE:
        return dict(wanted.traits)
    after = dict(before or {})
    for key, value in wanted.traits.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


# A write's read, under its users' locks: their stored traits, then (a last row, user NULL) the
# rule-set lock taken shared (membership.rules.rematch's first lock, taken here to save it a
# round trip) and the clock once it is held. (Append runs its branches in order.) A write of a
# few users also sets the rest of its transaction's statements to generic plans: they are the
# same few statements on every call (prepared by psycopg from the fifth), and PostgreSQL's own
# choice kept planning them anew each time: the rule rows' statement took 0.8 ms with its
# generic plan, 2.7 ms planned each time (docs/performance.md, "Trait writes").
_LOAD = text(
    "SELECT user_id, traits, updated_at FROM user_traits WHERE user_id = ANY(CAST(:ids AS bigint[])) "
    "UNION ALL SELECT NULL, NULL, clock_timestamp() FROM (SELECT "
    f"{rule_matches.RULE_SET_SHARED_SQL}, set_config('plan_cache_mode', "
    "CASE WHEN :generic THEN 'force_generic_plan' ELSE current_setting('plan_cache_mode') END, true)) l"
)
GENERIC_PLANS_UP_TO = 64  # users in a write whose statements run with generic plans


# Every row of a write in one statement: the new traits (returned as stored, for the answer), the
# users cleared, the history rows, the keys seen (in key order: two writers meeting on new keys
# take them in the same order).
_WRITE = """
WITH up AS (
    INSERT INTO user_traits (user_id, traits, updated_at)
    SELECT u, CAST(t AS jsonb), :at FROM unnest(CAST(:ids AS bigint[]), CAST(:traits AS text[])) AS x(u, t)
    ON CONFLICT (user_id) DO UPDATE SET traits = EXCLUDED.traits, updated_at = EXCLUDED.updated_at
    RETURNING user_id, traits, updated_at
),
gone AS (DELETE FROM user_traits WHERE user_id = ANY(CAST(:cleared AS bigint[]))),
ev AS (
    INSERT INTO trait_events (user_id, keys, action, actor, occurred_at, operation_id)
    SELECT u, CAST(string_to_array(k, ',') AS varchar(64)[]), a, :actor, :at, CAST(:operation AS uuid)
    FROM unnest(CAST(:event_ids AS bigint[]), CAST(:keys AS text[]), CAST(:actions AS text[])) AS x(u, k, a)
),
seen AS (
    INSERT INTO trait_keys (key, first_seen_at)
    SELECT k, :at FROM unnest(CAST(:seen AS text[])) AS k ORDER BY k ON CONFLICT DO NOTHING
)
"""
_WRITE_RETURNING = text(_WRITE + "SELECT user_id, traits, updated_at FROM up").bindparams(
    bindparam("at", type_=UTCDateTime)
)
_WRITE_COUNTING = text(_WRITE + "SELECT count(*), NULL, NULL FROM up").bindparams(
    bindparam("at", type_=UTCDateTime)
)


def dump(traits: Traits) -> str:
    """A traits object as stored: compact JSON, Unicode as it is (no NaN: refused before)."""
    return _ENCODER.encode(traits)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write(
    session: DbSession,
    writes: Sequence[TraitWrite],
    *,
    actor: str,
    operation_id: uuid.UUID | None = None,
    at: datetime | None = None,
    stored: bool = False,
) -> WriteResult:
    """Apply ``writes`` (one per user, validated) in the caller's transaction; the one place a
    user's traits change.

    Takes the per-user lock of every user, in ascending id order (``membership.store.lock_users``:
    the lock a per-user membership change takes, so a trait change and a membership change of one
    user serialize), then reads their traits under it, stamps everything with one instant read
    after the locks (``at`` given: that one) and writes, set-based: the new traits, one
    ``trait_events`` row per user and action (``set``: keys added or given another value;
    ``deleted``: keys removed; ``cleared``: all of them, the user's row gone), the keys seen. A
    user whose traits come out the same writes nothing. A merge that would leave a user more than
    MAX_TRAITS_PER_USER keys is left out (``too_many``: per-user callers refuse it first).

    **The stage-2 hook** (issue 29, rules): the returned ``changed`` lists, for every user whose
    traits changed, the traits before and after, known here inside the transaction and under the
    users' locks. The re-matching of rule segments is to be called from this function, on
    ``changed``, before it returns: the trait change and the rule memberships it implies then
    commit (or roll back) together, and no per-user membership write can come between them.

    Round trips (a per-user PATCH is latency-bound): the users' locks; their traits read with
    the rule-set lock taken shared (rematch's first lock) and the clock; every row written in
    one statement (``stored``: the users' traits as stored returned by it, for the answer);
    then rematch's (docs/performance.md, "Trait writes").
    """
    ids = sorted({w.user_id for w in writes})
    membership_store.lock_users(session, ids)
    stored_rows: dict[int, tuple[Traits, datetime]] = {}
    read_at: datetime | None = None
    for user, traits, updated_at in session.execute(
        _LOAD, {"ids": ids, "generic": len(ids) <= GENERIC_PLANS_UP_TO}
    ):
        if user is None:
            read_at = updated_at
        else:
            stored_rows[user] = (traits, updated_at)
    assert read_at is not None
    now = at or read_at
    result = WriteResult(at=now)
    upsert_ids: list[int] = []
    upsert_traits: list[str] = []
    cleared: list[int] = []
    event_ids: list[int] = []
    event_keys: list[str] = []
    event_actions: list[str] = []
    seen: set[str] = set()
    for wanted in sorted(writes, key=lambda w: w.user_id):
        before = stored_rows[wanted.user_id][0] if wanted.user_id in stored_rows else None
        after = decide(before, wanted)
        if after is not None and len(after) > MAX_TRAITS_PER_USER:
            result.too_many.append(wanted.user_id)
            continue
        old = before or {}
        set_keys = sorted(k for k, v in (after or {}).items() if k not in old or not same(old[k], v))
        deleted = sorted(k for k in old if after is None or k not in after)
        if before is not None and after is not None and not set_keys and not deleted:
            result.unchanged += 1
            continue
        if before is None and after is None:
            result.unchanged += 1
            continue
        if before is None:
            result.created += 1
        result.changed.append(TraitChange(wanted.user_id, before, after, set_keys, deleted))
        if after is None:
            cleared.append(wanted.user_id)
        else:
            upsert_ids.append(wanted.user_id)
            upsert_traits.append(dump(after))
        if set_keys:
            event_ids.append(wanted.user_id)
            event_keys.append(",".join(set_keys))
            event_actions.append(TraitAction.SET)
            seen.update(set_keys)
        if deleted or after is None:  # (a user cleared with no keys still leaves: one row, no keys)
            event_ids.append(wanted.user_id)
            event_keys.append(",".join(deleted))
            event_actions.append(TraitAction.CLEARED if after is None else TraitAction.DELETED)
    if upsert_ids or cleared or event_ids:
        written = session.execute(
            _WRITE_RETURNING if stored else _WRITE_COUNTING,
            {
                "ids": upsert_ids,
                "traits": upsert_traits,
                "cleared": cleared,
                "event_ids": event_ids,
                "keys": event_keys,
                "actions": event_actions,
                "seen": sorted(seen),
                "actor": actor[:100],
                "at": now,
                "operation": str(operation_id) if operation_id else None,
            },
        ).all()
        if stored:
            after_rows = dict(stored_rows)
            for user in cleared:
                after_rows.pop(user, None)
            after_rows.update({user: (traits, updated_at) for user, traits, updated_at in written})
            result.stored = after_rows
    elif stored:
        result.stored = dict(stored_rows)
    if result.changed:  # the rule memberships these changes imply, in this transaction (issue 29)
        matched = rule_matches.rematch(
            session,
            [(c.user_id, c.after) for c in result.changed],
            actor[:100],
            now,
            rule_set_locked=True,
        )
        result.rules_added, result.rules_removed = matched.added, matched.removed
    return result
