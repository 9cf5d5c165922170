"""Impact before change: how many known users a change would move, computed before it is made.

Every change that moves users — a rollout raised or lowered, a segment joining or leaving an
exclusion group, a scheduled step, a bulk remove or replace, a deletion — can be previewed
here; the API's ``?dry_run=true`` and the dashboard's confirmations both call these functions,
so there is one computation. *Known users* are the ids seen in memberships, rollout exclusions
or history (users never seen anywhere cannot be counted: a rollout covers them by hash alone).

The answer is the membership rule (``membership_rule.members``) evaluated for every known user
over the segments the change can move — the changed segment and every live segment of the
exclusion groups it is in or joins — once with the state in force now (due scheduled changes
applied, as reads have them) and once with the state the change would make; each flip is one
history entry, so for an immediate change the counts are exactly the ``added`` / ``removed``
entries history then shows at the change's instant (``tests/services/test_impact.py`` holds
them to it). Set-based: the rows come packed from SQL, rollouts are NumPy over all users.

Each answer carries the ``catalog_version`` it was computed on: a change sent with it is refused
(409 ``impact_changed``, rollout_state.require_version) once the catalog has moved on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, literal_column, or_, select, text

from webapp.models import ExclusionGroup, RetiredMembership, Segment, UserTraits
from webapp.services import restore, targeting
from webapp.services.common import DbSession, utcnow
from webapp.services.membership import bulk
from webapp.services.membership import rules as rule_matches
from webapp.services.rollout import buckets as rollout
from webapp.services.rollout.allocation import RolloutState, free_ranges
from webapp.services.segments import lifecycle as segments
from webapp.services.segments import schedules
from webapp.services.segments.rollout_state import (
    catalog_version,
    change_or_error,
    pending,
    planned,
    refuse_schedules_of_rules,
    rules_or_error,
    state_of,
)

UNSET = segments.UNSET
Matrix = npt.NDArray[np.bool_]
Ids = npt.NDArray[np.int64]

# Each table's ids packed (int8 each); NumPy makes them one sorted set (a UNION in SQL, hashing
# or sorting 200,000 ids under string_agg, took 1.05 s of a 1.3 s preview).
KNOWN_USERS = """
SELECT string_agg(int8send(user_id), '') FROM memberships
UNION ALL SELECT string_agg(int8send(user_id), '') FROM membership_events
UNION ALL SELECT string_agg(int8send(user_id), '') FROM rollout_exclusions
"""
SCOPE_ROWS = """
SELECT 0, string_agg(int8send(user_id) || int4send(segment_id), '') FROM memberships
WHERE segment_id = ANY(CAST(:scope AS int[])) AND (expires_at IS NULL OR expires_at > :now)
UNION ALL SELECT 1, string_agg(int8send(user_id) || int4send(segment_id), '') FROM rollout_exclusions
WHERE segment_id = ANY(CAST(:scope AS int[]))
"""
TRAIT_USERS = "SELECT string_agg(int8send(user_id), '' ORDER BY user_id) FROM user_traits"
PAIR = np.dtype([("user", ">i8"), ("segment", ">i4")])


@dataclass(frozen=True)
class Move:
    """How one segment's membership would move: known users leaving and joining it."""

    slug: str
    leaving: int
    joining: int


@dataclass(frozen=True)
class Impact:
    """A change's effect on known users as of now: ``moves`` lists every segment whose
    membership moves, the changed segment first (always listed); ``leaving`` / ``joining``
    count history entries (a user leaving two segments counts twice)."""

    segment: str
    catalog_version: int
    known_users: int
    moves: tuple[Move, ...]
    seconds: float = field(default=0.0, compare=False)
    eventual: bool = False  # the moves happen as a re-evaluation reaches the users, not at once

    @property
    def leaving(self) -> int:
        return sum(m.leaving for m in self.moves)

    @property
    def joining(self) -> int:
        return sum(m.joining for m in self.moves)

    @property
    def own(self) -> Move:
        return self.moves[0]

    @property
    def others(self) -> tuple[Move, ...]:
        return self.moves[1:]


@dataclass(frozen=True)
class Limits:
    """What a rollout value can be for a segment now: ``ceiling`` (what it owns plus what its
    group has free; 100 outside a group) and its group's other segments by slug, in basis points."""

    group: str | None
    ceiling: int
    free: int
    others: tuple[tuple[str, int], ...] = ()


# -- previews of each kind of change ---------------------------------------------------------


def of_update(
    session: DbSession,
    segment: Segment,
    basis_points: int | None,
    group: str | None | object = ...,
    now: datetime | None = None,
    rules: object = UNSET,
) -> Impact:
    """A rollout change (``basis_points``, None: unchanged) and/or a group move (``group``: a
    name, None for no group, ``...`` unchanged) and/or new rules (``rules``: canonical, None
    for none, UNSET unchanged), validated as the change is (422 ``group_full``).

    A change that re-evaluates a rule segment (its rules, or the percentage or group of a
    segment with rules) moves its users only as its re-evaluation reaches them: the answer is
    then ``eventual`` — the moves once every user with traits is evaluated (its coverage after:
    the users whose traits the rules match, in its rollout after), counted now. Rules removed,
    the segment answers by its rollout at once (not eventual)."""
    now = now or utcnow()
    target_group = segment.exclusion_group if group is ... else group
    assert target_group is None or isinstance(target_group, str)
    rules_after = segment.rules if rules is UNSET else rules

    def after(states: dict[int, RolloutState]) -> dict[int, RolloutState]:
        target = states[segment.id].basis_points if basis_points is None else basis_points
        new = change_or_error(states, segment.id, target, group)
        return {**states, segment.id: new}

    if rules_after is None and segment.rules is None:
        return _measure(session, segment, {segment.exclusion_group, target_group}, now, after)
    ruleset = None if rules_after is None else rule_matches.ruleset_of(rules_after)
    reevaluates = ruleset is not None and (
        rules_after != segment.rules
        or (basis_points is not None and basis_points != segment.rollout_basis_points)
        or target_group != segment.exclusion_group
    )
    if ruleset is not None and not reevaluates:  # nothing changes how it covers anyone
        return _measure(session, segment, {segment.exclusion_group, target_group}, now, after)
    traits_users = _ids(session.scalar(text(TRAIT_USERS)))
    matched = None if ruleset is None else _matching_ids(session, ruleset)
    return _measure(
        session,
        segment,
        {segment.exclusion_group, target_group},
        now,
        after,
        extra=traits_users,
        rules_after=(matched,),
        eventual=reevaluates,
    )


def of_schedule(
    session: DbSession, segment: Segment, at: datetime, basis_points: int, now: datetime | None = None
) -> Impact:
    """A scheduled step, counted today: the known users and rows of now, the rollouts as the
    pending changes before ``at`` leave them, then this step."""
    now = now or utcnow()
    before_at = [e for e in pending(session, [segment.id], after=now) if e.at < at]

    def before(states: dict[int, RolloutState]) -> dict[int, RolloutState]:
        for entry, _, new in planned(states, before_at):
            states = {**states, entry.segment_id: new}
        return states

    def after(states: dict[int, RolloutState]) -> dict[int, RolloutState]:
        return {**states, segment.id: change_or_error(states, segment.id, basis_points)}

    return _measure(session, segment, {segment.exclusion_group}, now, after, before=before)


def of_delete(session: DbSession, segment: Segment, now: datetime | None = None) -> Impact:
    """Deleting the segment: every member leaves; in a group, users its explicit members held
    may join the group's other rollouts."""
    now = now or utcnow()
    return _measure(session, segment, {segment.exclusion_group}, now, dict, gone=True)


def of_remove(
    session: DbSession, segment: Segment, user_ids: Sequence[int], now: datetime | None = None
) -> Impact:
    """A bulk remove of ``user_ids``, each as a per-user removal (an explicit member's row
    goes; a user the rollout covers is excluded from it)."""
    now = now or utcnow()
    listed = _sorted_set(np.asarray(user_ids, dtype=np.int64))

    def rows(users: Ids, column: int, explicit: Matrix, excluded: Matrix, covered: Matrix) -> None:
        hit = _isin(users, listed)
        explicit[hit, column] = False
        excluded[hit, column] |= covered[hit, column]

    return _measure(session, segment, {segment.exclusion_group}, now, dict, rows=rows, extra=listed)


def of_replace(
    session: DbSession, segment: Segment, user_ids: Sequence[int], now: datetime | None = None
) -> Impact:
    """A bulk replace by ``user_ids``: they become explicit members (an exclusion lifted), the
    other explicit members are removed as a bulk remove removes them."""
    now = now or utcnow()
    listed = _sorted_set(np.asarray(user_ids, dtype=np.int64))

    def rows(users: Ids, column: int, explicit: Matrix, excluded: Matrix, covered: Matrix) -> None:
        hit = _isin(users, listed)
        leaving = explicit[:, column] & ~hit
        excluded[leaving, column] |= covered[leaving, column]
        explicit[:, column] = hit
        excluded[hit, column] = False

    return _measure(session, segment, {segment.exclusion_group}, now, dict, rows=rows, extra=listed)


def of_restore(session: DbSession, segment: Segment, now: datetime | None = None) -> Impact:
    """Restoring a deleted segment (services.restore): its kept explicit members still live at
    ``now`` and its rollout (as ``restore.fitting`` gives it: 0% when its group has no room)
    come back; in a group, users its explicit members hold leave the group's other rollouts."""
    now = now or utcnow()
    wanted = restore.settings_at_deletion(session, segment)
    kept = _sorted_set(
        np.asarray(
            session.scalars(
                select(RetiredMembership.user_id).where(
                    RetiredMembership.segment_id == segment.id,
                    or_(RetiredMembership.expires_at.is_(None), RetiredMembership.expires_at > now),
                )
            ).all(),
            dtype=np.int64,
        )
    )

    def rows(users: Ids, column: int, explicit: Matrix, excluded: Matrix, covered: Matrix) -> None:
        explicit[_isin(users, kept), column] = True

    def after(states: dict[int, RolloutState]) -> dict[int, RolloutState]:
        scope = {sid: session.get_one(Segment, sid) for sid in states}
        return {**states, segment.id: restore.fitting(session, scope, states, segment.id, wanted, now)}

    return _measure(session, segment, {wanted.group}, now, after, rows=rows, revived=True, extra=kept)


def limits(
    session: DbSession, segment: Segment, group: str | None | object = ..., now: datetime | None = None
) -> Limits:
    """The most the segment's rollout can be now in ``group`` (``...``: its own; a group it
    would join offers only its free space), and that group's other shares."""
    now = now or utcnow()
    target = segment.exclusion_group if group is ... else group
    assert target is None or isinstance(target, str)
    scope, states, _ = _scope(session, segment, {segment.exclusion_group, target}, now)
    if target is None:
        return Limits(None, rollout.BUCKETS, rollout.BUCKETS)
    own = states[segment.id].ranges if states[segment.id].group == target else ()
    members = [s for s in scope if s.id != segment.id and states[s.id].group == target]
    free = sum(end - start for start, end in free_ranges([states[s.id].ranges for s in members] + [own]))
    shares = tuple((s.slug, states[s.id].basis_points) for s in members)
    return Limits(target, sum(end - start for start, end in own) + free, free, shares)


# -- the previews the API's dry runs and the dashboard ask for: validated as the change is ---


def preview_update(
    session: DbSession,
    slug: str,
    rollout_percent: object = UNSET,
    exclusion_group: object = UNSET,
    now: datetime | None = None,
    rules: object = UNSET,
) -> Impact:
    """PATCH /segments/<slug> (or the settings form, or the rule builder) as a dry run: the same
    422 and 409 the change would answer, else its impact (``eventual`` for a change that
    re-evaluates a rule segment: see ``of_update``)."""
    new_bp = None if rollout_percent is UNSET else segments.basis_points_or_error(rollout_percent)
    new_group = ... if exclusion_group is UNSET else segments.group_or_error(exclusion_group)
    new_rules = UNSET if rules is UNSET else rules_or_error(rules)
    segment = segments.get_live_segment(session, slug)
    if new_rules is not UNSET and new_rules is not None and segment.rules is None:
        refuse_schedules_of_rules(session, segment, adding_rules=True)
    if isinstance(new_group, str) and new_group != segment.exclusion_group:
        scope, _, _ = _scope(session, segment, {new_group}, now or utcnow())
        segments.refuse_explicit_overlap(session, segment, new_group, {s.id: s for s in scope})
    if new_group is not ... and new_group == segment.exclusion_group:
        new_group = ...
    return of_update(session, segment, new_bp, new_group, now, new_rules)


def preview_schedule(
    session: DbSession, slug: str, at: object, rollout_percent: object, now: datetime | None = None
) -> Impact:
    now = now or utcnow()
    when = schedules.when_or_error(at, now)
    basis_points = segments.basis_points_or_error(rollout_percent)
    return of_schedule(session, segments.get_live_segment(session, slug), when, basis_points, now)


def preview_delete(session: DbSession, slug: str, now: datetime | None = None) -> Impact:
    return of_delete(session, segments.get_live_segment(session, slug), now)


def preview_restore(
    session: DbSession, slug: str, days: int = restore.DEFAULT_DAYS, now: datetime | None = None
) -> Impact:
    """POST /segments/<slug>/restore as a dry run: the same 404 and 409 the restore would
    answer (window passed, slug taken since, ..., kept members overlapping its group), else
    its impact."""
    now = now or utcnow()
    segment = restore.find_deleted(session, slug)
    restore.refuse_unrestorable(session, segment, days, now)
    group = restore.settings_at_deletion(session, segment).group
    if group is not None:
        live = session.scalars(select(Segment).where(Segment.exclusion_group == group, Segment.is_live))
        restore.refuse_overlap(session, segment, group, {s.id: s for s in live}, now)
    return of_restore(session, segment, now)


def preview_remove(
    session: DbSession, slug: str, user_ids: Sequence[int], now: datetime | None = None
) -> Impact:
    now = now or utcnow()
    ids, _ = bulk.validated(user_ids, None, None, now, "nothing can be removed")
    return of_remove(session, segments.get_live_segment(session, slug), ids, now)


def preview_replace(
    session: DbSession,
    slug: str,
    user_ids: Sequence[int],
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Impact:
    now = now or utcnow()
    ids, _ = bulk.validated(user_ids, ttl_seconds, expires_at, now, "nothing can be replaced")
    segment = segments.get_live_segment(session, slug)
    bulk.refuse_group_conflicts(session, segment, ids, now, "nothing would be replaced")
    return of_replace(session, segment, ids, now)


# -- the computation -------------------------------------------------------------------------

Rows = Callable[[Ids, int, Matrix, Matrix, Matrix], None]
States = Callable[[dict[int, RolloutState]], dict[int, RolloutState]]


def _measure(
    session: DbSession,
    segment: Segment,
    groups: set[str | None],
    now: datetime,
    after: States,
    *,
    before: States | None = None,
    rows: Rows | None = None,
    gone: bool = False,
    revived: bool = False,
    extra: Ids | None = None,
    rules_after: tuple[Ids | None] | None = None,
    eventual: bool = False,
) -> Impact:
    """Membership of every known user (and ``extra`` ids) over the scope, before and after
    (``gone``: the segment out of the catalog after, ``revived``: out of it before).
    ``rules_after``: how the segment covers after a change of its rules: (the sorted ids its
    rules match,) — covered where also in its rollout after — or (None,) for no rules (by its
    rollout after, at once)."""
    started = time.perf_counter()
    for _ in range(3):
        version = catalog_version(session)
        scope, states, salts = _scope(session, segment, groups, now)
        if before is not None:
            states = before(states)
        new_states = after(dict(states))
        users = _known_users(session)
        if extra is not None and len(extra):
            users = _sorted_set(np.concatenate([users, extra]))
        explicit, excluded = _rows(session, scope, users, now)
        hashes = user_hashes(users)
        covered = _covered(scope, states, salts, users, hashes)
        live = np.ones(len(scope), dtype=bool)
        live_before = np.ones(len(scope), dtype=bool)
        explicit_after, excluded_after = explicit.copy(), excluded.copy()
        column = next(i for i, s in enumerate(scope) if s.id == segment.id)
        matched = _rule_matches(session, scope, users)
        if matched is not None:  # a segment in rule mode covers by its rows, whatever its rollout
            covered[:, matched[1]] = matched[0][:, matched[1]]
        if rows is not None:
            rows(users, column, explicit_after, excluded_after, covered)
        covered_after = _covered(scope, new_states, salts, users, hashes)
        if matched is not None:  # (its rows change only when its re-evaluation reaches them)
            ruled = matched[1].copy()
            if rules_after is not None:
                ruled[column] = False
            covered_after[:, ruled] = matched[0][:, ruled]
        if rules_after is not None and rules_after[0] is not None:
            covered_after[:, column] &= _isin(users, rules_after[0])
        if gone:
            live[column] = False
        if revived:
            live_before[column] = False
        groups_before = [states[s.id].group for s in scope]
        groups_after = [new_states[s.id].group for s in scope]
        was = _members(explicit, excluded, covered, groups_before, live_before)
        will = _members(explicit_after, excluded_after, covered_after, groups_after, live)
        if catalog_version(session) != version:
            continue  # the catalog moved during the computation: once more, on one version
        leaving = (was & ~will).sum(axis=0)
        joining = (will & ~was).sum(axis=0)
        moves = [Move(segment.slug, int(leaving[column]), int(joining[column]))]
        moves += [
            Move(s.slug, int(leaving[i]), int(joining[i]))
            for i, s in enumerate(scope)
            if i != column and (leaving[i] or joining[i])
        ]
        return Impact(
            segment.slug, version, len(users), tuple(moves), time.perf_counter() - started, eventual
        )
    raise RuntimeError("the segment catalog kept changing during one preview")


def _scope(
    session: DbSession, segment: Segment, groups: set[str | None], now: datetime
) -> tuple[list[Segment], dict[int, RolloutState], dict[str, str]]:
    """The live segments a change can move (the segment and every live segment of ``groups``)
    by slug, their rollout states in force ``now`` (due scheduled changes applied in memory, as
    reads have them) and the groups' salts (a group not created yet: the salt it will have)."""
    names = sorted(g for g in groups if g)
    condition = Segment.id == segment.id
    if names:
        condition = or_(condition, Segment.exclusion_group.in_(names))
    scope = list(
        session.scalars(
            select(Segment)
            .where(condition, Segment.is_live)
            .order_by(Segment.slug, Segment.id)
            .execution_options(populate_existing=True)
        )
    )
    if not any(s.id == segment.id for s in scope):
        scope = sorted([*scope, segment], key=lambda s: (s.slug, s.id))
    states = {s.id: state_of(s) for s in scope}
    for entry, _, new in planned(states, pending(session, states, due_by=now)):
        states[entry.segment_id] = new
    salts = {name: rollout.group_salt(name) for name in names}
    for name, salt in session.execute(
        select(ExclusionGroup.name, ExclusionGroup.salt).where(ExclusionGroup.name.in_(names))
    ):
        salts[name] = salt
    return scope, states, salts


def _known_users(session: DbSession) -> Ids:
    parts = [np.frombuffer(packed or b"", dtype=">i8") for packed in session.scalars(text(KNOWN_USERS))]
    return _sorted_set(np.concatenate(parts).astype(np.int64))


def _ids(packed: bytes | None) -> Ids:
    """Ids packed by ``string_agg(int8send(...))`` (in id order) as an array."""
    return np.frombuffer(packed or b"", dtype=">i8").astype(np.int64)


def _matching_ids(session: DbSession, ruleset: targeting.RuleSet) -> Ids:
    """The sorted ids of the users with traits whom ``ruleset`` matches: in SQL (``RuleSet.sql``),
    each row of an inexact filter (a superset) confirmed with ``match``."""
    found = ruleset.sql(UserTraits.__table__.c.traits)
    if found.exact:
        packed = session.scalar(
            select(func.string_agg(func.int8send(UserTraits.user_id), literal_column("''::bytea"))).where(
                found.where
            )
        )
        return np.sort(_ids(packed))
    return np.fromiter(rule_matches.confirmed_matches(session, ruleset), dtype=np.int64)  # (by id)


def _sorted_set(ids: Ids) -> Ids:
    """np.unique by sorting (NumPy 2's hash-based unique took 0.54 s for 200,000 ids, this 0.02)."""
    ids = np.sort(ids)
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return ids[keep]


def _rows(session: DbSession, scope: list[Segment], users: Ids, now: datetime) -> tuple[Matrix, Matrix]:
    """users x scope: live explicit memberships, rollout exclusions."""
    column = {s.id: i for i, s in enumerate(scope)}
    column_of = np.zeros(max(column) + 1, dtype=np.intp)
    column_of[list(column)] = list(column.values())
    found = {
        kind: np.frombuffer(packed or b"", PAIR)
        for kind, packed in session.execute(text(SCOPE_ROWS), {"scope": list(column), "now": now})
    }
    matrices = []
    for kind in (0, 1):
        pairs = found.get(kind, np.zeros(0, PAIR))
        matrix = np.zeros((len(users), len(scope)), dtype=bool)
        at = np.searchsorted(users, pairs["user"].astype(np.int64))
        columns = column_of[pairs["segment"].astype(np.intp)]
        matrix[at, columns] = True
        matrices.append(matrix)
    return matrices[0], matrices[1]


def _rule_matches(
    session: DbSession, scope: list[Segment], users: Ids
) -> tuple[Matrix, npt.NDArray[np.bool_]] | None:
    """users x scope: the rule match rows of the scope's segments in rule mode, and which
    columns those are; None when none is (issue 29: such a segment covers exactly its rows
    until its re-evaluation reaches a user, so a change's immediate impact keeps them)."""
    ruled = np.array([s.rule_mode for s in scope], dtype=bool)
    if not ruled.any():
        return None
    matrix = np.zeros((len(users), len(scope)), dtype=bool)
    column = {s.id: i for i, s in enumerate(scope) if s.rule_mode}
    column_of = np.zeros(max(column) + 1, dtype=np.intp)
    column_of[list(column)] = list(column.values())
    packed = session.scalar(
        text(
            "SELECT string_agg(int8send(user_id) || int4send(segment_id), '') FROM rule_matches "
            "WHERE segment_id = ANY(CAST(:ids AS int[]))"
        ),
        {"ids": list(column)},
    )
    pairs = np.frombuffer(packed or b"", PAIR)
    found = pairs["user"].astype(np.int64)
    at = np.minimum(np.searchsorted(users, found), max(len(users) - 1, 0))
    known = (users[at] == found) if len(users) else np.zeros(len(found), dtype=bool)
    matrix[at[known], column_of[pairs["segment"].astype(np.intp)[known]]] = True
    return matrix, ruled


def _covered(
    scope: list[Segment],
    states: Mapping[int, RolloutState],
    salts: Mapping[str, str],
    users: Ids,
    hashes: npt.NDArray[np.uint64],
) -> Matrix:
    """users x scope: the rollouts of ``states`` covering each user (explicit rows aside)."""
    covered = np.zeros((len(users), len(scope)), dtype=bool)
    for i, segment in enumerate(scope):
        state = states[segment.id]
        if state.group is not None:
            rule = rollout.Rule(rollout.SCHEME, salts[state.group], state.ranges)
        else:
            rule = rollout.Rule(
                segment.hash_scheme, segment.salt, rollout.ranges_of(None, state.basis_points)
            )
        if not rule.ranges or not len(users):
            continue
        if rule.scheme == 1:
            covered[:, i] = np.fromiter((rule.covers(int(u)) for u in users), dtype=bool, count=len(users))
            continue
        buckets = rollout.mix_buckets(hashes ^ np.uint64(rollout.key(rule.salt)))
        for start, end in rule.ranges:
            covered[:, i] |= (buckets >= start) & (buckets < end)
    return covered


def _members(
    explicit: Matrix, excluded: Matrix, covered: Matrix, groups: list[str | None], live: npt.NDArray[np.bool_]
) -> Matrix:
    """The membership rule over users x segments (columns by slug): explicit counts; in a
    group the first explicit segment by slug holds it (the group's other rollouts and explicit
    rows do not count); a rollout counts unless the user is excluded or explicit there."""
    explicit = explicit & live
    covered = covered & live
    kept = explicit.copy()
    held = np.zeros_like(explicit)
    for group in {g for g in groups if g is not None}:
        columns = [i for i, g in enumerate(groups) if g == group]
        inside = explicit[:, columns]
        kept[:, columns] = inside & (np.cumsum(inside, axis=1) == 1)
        held[:, columns] = np.asarray(inside.any(axis=1), dtype=bool)[:, None]
    return kept | (covered & ~excluded & ~explicit & ~held)


def _isin(users: Ids, listed: Ids) -> npt.NDArray[np.bool_]:
    return np.isin(users, listed, assume_unique=True)


# -- users' hashes, kept: a user's hash never changes ----------------------------------------

_hash_lock = threading.Lock()
_hash_ids: Ids = np.zeros(0, dtype=np.int64)
_hash_values: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
MAX_KEPT_HASHES = 5_000_000


def user_hashes(users: Ids) -> npt.NDArray[np.uint64]:
    """rollout.user_hashes of sorted unique ``users``, kept per process (blake2b per user is
    what a preview of many users costs most: about 1 µs each)."""
    global _hash_ids, _hash_values
    with _hash_lock:
        ids, values = _hash_ids, _hash_values
    at = np.searchsorted(ids, users)
    known = at < len(ids)
    known[known] = ids[at[known]] == users[known]
    result = np.empty(len(users), dtype=np.uint64)
    result[known] = values[at[known]]
    missing = users[~known]
    if len(missing):
        result[~known] = rollout.user_hashes(missing.tolist())
        merged_ids = np.concatenate([ids, missing])
        merged_values = np.concatenate([values, result[~known]])
        order = np.argsort(merged_ids, kind="stable")
        if len(order) <= MAX_KEPT_HASHES:
            with _hash_lock:
                _hash_ids, _hash_values = merged_ids[order], merged_values[order]
    return result
