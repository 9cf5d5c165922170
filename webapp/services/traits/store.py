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
from webapp.services.common import DbSession, clock
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


def load(session: DbSession, user_ids: Sequence[int]) -> dict[int, tuple[Traits, datetime]]:
    """Stored traits (and when they last changed) of these users."""
    rows = session.execute(
        text(
            "SELECT user_id, traits, updated_at FROM user_traits WHERE user_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(user_ids)},
    )
    return {user: (traits, updated_at) for user, traits, updated_at in rows}


_UPSERT = text(
    "INSERT INTO user_traits (user_id, traits, updated_at) "
    "SELECT u, CAST(t AS jsonb), :at FROM unnest(CAST(:ids AS bigint[]), CAST(:traits AS text[])) AS x(u, t) "
    "ON CONFLICT (user_id) DO UPDATE SET traits = EXCLUDED.traits, updated_at = EXCLUDED.updated_at"
).bindparams(bindparam("at", type_=UTCDateTime))
_EVENTS = text(
    "INSERT INTO trait_events (user_id, keys, action, actor, occurred_at, operation_id) "
    "SELECT u, CAST(string_to_array(k, ',') AS varchar(64)[]), a, :actor, :at, CAST(:operation AS uuid) "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[]), CAST(:actions AS text[])) AS x(u, k, a)"
).bindparams(bindparam("at", type_=UTCDateTime))
_KEYS = text(
    "INSERT INTO trait_keys (key, first_seen_at) "
    "SELECT k, :at FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k ON CONFLICT DO NOTHING"
).bindparams(bindparam("at", type_=UTCDateTime))


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
    """
    ids = sorted({w.user_id for w in writes})
    membership_store.lock_users(session, ids)
    stored = load(session, ids)
    now = at or clock(session)
    result = WriteResult(at=now)
    upsert_ids: list[int] = []
    upsert_traits: list[str] = []
    cleared: list[int] = []
    event_ids: list[int] = []
    event_keys: list[str] = []
    event_actions: list[str] = []
    seen: set[str] = set()
    for wanted in sorted(writes, key=lambda w: w.user_id):
        before = stored[wanted.user_id][0] if wanted.user_id in stored else None
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
    if upsert_ids:
        session.execute(_UPSERT, {"ids": upsert_ids, "traits": upsert_traits, "at": now})
    if cleared:
        session.execute(
            text("DELETE FROM user_traits WHERE user_id = ANY(CAST(:ids AS bigint[]))"), {"ids": cleared}
        )
    if event_ids:
        session.execute(
            _EVENTS,
            {
                "ids": event_ids,
                "keys": event_keys,
                "actions": event_actions,
                "actor": actor[:100],
                "at": now,
                "operation": str(operation_id) if operation_id else None,
            },
        )
    if seen:
        session.execute(_KEYS, {"keys": sorted(seen), "at": now})
    return result
