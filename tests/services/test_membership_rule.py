"""The fast paths equal the one membership rule (``membership_rule``), by hypothesis.

- The NumPy batch evaluation (``read_path._evaluate``) answers every user exactly as
  ``membership_rule.members`` does over random catalogs: rollouts of both hash schemes,
  exclusion groups with bucket ranges, scheduled changes due or not, explicit rows, exclusions
  and repeated ids. Coverage for the rule is computed one (user, segment) at a time with
  ``rollout.Rule``, independently of the NumPy matrix.
- The set-based SQL writers (a per-user change, bulk add and bulk remove) store exactly the
  history rows the rule's flips say, visible or not, over random prior states of one user.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp.models import MembershipEvent
from webapp.models.enums import Source
from webapp.services.membership.bulk import bulk_add, bulk_remove
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.reads import rule as membership_rule
from webapp.services.reads.catalog import load_catalog
from webapp.services.reads.path import (
    NEVER,
    POSTGRES_EPOCH,
    _evaluate,
    _evaluate_one,
    _Records,
    _UserRows,
    user_view,
)
from webapp.services.rollout import allocation
from webapp.services.rollout import buckets as rollout
from webapp.services.segments.lifecycle import create_segment

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GROUPS = ("GX", "GY")


@st.composite
def catalogs(draw):
    """CATALOG rows: 1-7 live segments (some grouped, some of the old hash scheme), valid bucket
    ranges per group, and pending scheduled changes before and after NOW."""
    count = draw(st.integers(1, 7))
    states: dict[int, allocation.RolloutState] = {}
    specs = []
    for sid in range(1, count + 1):
        group = draw(st.sampled_from((None, None, *GROUPS)))
        scheme = 1 if group is None and draw(st.booleans()) else 2
        states[sid] = allocation.RolloutState(0, group, ())
        wanted = draw(st.sampled_from((0, 100, 1000, 2500, 5000, 7500, 10000)))
        states[sid] = allocation.change(states, sid, wanted, clamp=True)
        specs.append((sid, scheme, draw(st.booleans())))  # (rule mode: covered by rule_matches rows)
    rows = []
    for sid, scheme, rule_mode in specs:
        state = states[sid]
        rows.append(
            (
                0,
                1,
                sid,
                f"S{sid}",
                f"salt{sid}",
                state.basis_points,
                scheme,
                state.group,
                f"gsalt-{state.group}" if state.group else None,
                rollout.flat(state.ranges) if state.group else None,
                None,
                rule_mode,
            )
        )
    pending = draw(
        st.lists(
            st.tuples(
                st.sampled_from([sid for sid, _, _ in specs]),
                st.sampled_from((0, 500, 3000, 10000)),
                st.integers(-3600, 3600),
            ),
            max_size=4,
        )
    )
    for i, (sid, bp, offset) in enumerate(pending):
        rows.append(
            (1, i + 1, sid, None, None, bp, None, None, None, None, NOW + timedelta(seconds=offset), None)
        )
    return rows


def _in_force(rows) -> dict[int, rollout.Rule]:
    """Each segment's rollout at NOW, with the due scheduled changes applied in time order."""
    states = {
        r[2]: allocation.RolloutState(r[5], r[7], rollout.ranges_of(r[9], r[5]) if r[7] else ())
        for r in rows
        if r[0] == 0
    }
    due = sorted((r[10], r[1], r[2], r[5]) for r in rows if r[0] == 1 and r[10] <= NOW)
    states = allocation.replay(states, [(sid, bp) for _, _, sid, bp in due])
    rules = {}
    for r in rows:
        if r[0] == 0:
            state = states[r[2]]
            if state.group is not None:
                rules[r[2]] = rollout.Rule(rollout.SCHEME, r[8], state.ranges)
            else:
                rules[r[2]] = rollout.Rule(r[6], r[4], rollout.ranges_of(None, state.basis_points))
    return rules


def _micros(at: datetime | None) -> int:
    if at is None:
        return NEVER
    return (at - POSTGRES_EPOCH) // timedelta(microseconds=1)


@settings(max_examples=300, deadline=None, database=None)
@given(
    rows=catalogs(),
    users=st.lists(st.integers(1, 2**63 - 1) | st.integers(1, 60), min_size=1, max_size=12),
    data=st.data(),
)
def test_batch_evaluation_equals_the_rule(rows, users, data):
    catalog = load_catalog(rows)
    unique = list(dict.fromkeys(users))
    segment_ids = [r[2] for r in rows if r[0] == 0]
    explicit = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(unique),
                st.sampled_from(segment_ids),
                st.sampled_from((None, NOW + timedelta(microseconds=1), NOW + timedelta(days=3))),
            ),
            max_size=10,
            unique_by=lambda t: (t[0], t[1]),
        )
    )
    excluded = data.draw(
        st.lists(st.tuples(st.sampled_from(unique), st.sampled_from(segment_ids)), max_size=6, unique=True)
    )
    # rule_matches rows: of segments in rule mode (they cover) and not (ignored by reads), and
    # of segment ids not live (ignored too)
    matched = data.draw(
        st.lists(
            st.tuples(st.sampled_from(unique), st.sampled_from([*segment_ids, 99])), max_size=10, unique=True
        )
    )
    records = _Records(
        1,
        np.array([u for u, _, _ in explicit], dtype=np.int64),
        np.array([s for _, s, _ in explicit], dtype=np.intp),
        np.array([_micros(at) for _, _, at in explicit], dtype=np.int64),
        np.array([u for u, _ in excluded], dtype=np.int64),
        np.array([s for _, s in excluded], dtype=np.intp),
        np.array([u for u, _ in matched], dtype=np.int64),
        np.array([s for _, s in matched], dtype=np.intp),
    )
    rollouts = catalog.rollouts(NOW)
    batch = _evaluate(catalog, records, rollouts, rollouts.matrix(unique), users, unique)

    rules, slug = _in_force(rows), {r[2]: r[3] for r in rows if r[0] == 0}
    rule_mode = {r[2] for r in rows if r[0] == 0 and r[11]}
    group_of = {r[2]: r[7] for r in rows if r[0] == 0 and r[7] is not None}
    for user_id, answer in zip(users, batch.answers(), strict=True):
        mine = {s: at for u, s, at in explicit if u == user_id}
        expected = membership_rule.members(
            mine,
            {s for u, s in excluded if u == user_id},
            [
                sid
                for sid, rule in rules.items()
                if ((user_id, sid) in matched if sid in rule_mode else rule.covers(user_id))
            ],
            group_of,
            rank=lambda sid: slug[sid],
        )

        def source(sid: int, mine: dict = mine) -> Source:
            if sid in mine:
                return Source.EXPLICIT
            return Source.RULE if sid in rule_mode else Source.ROLLOUT

        want = sorted((slug[sid], source(sid), mine.get(sid)) for sid in expected)
        got = sorted((a.slug, a.source, a.expires_at) for a in answer)
        assert got == want, (user_id, got, want)
        # the single read's evaluation (the same rule over one user's rows) agrees
        one = _UserRows(
            1,
            list(mine),
            list(mine.values()),
            [s for u, s in excluded if u == user_id],
            [s for u, s in matched if u == user_id],
        )
        single = sorted(
            (a.slug, a.source, a.expires_at) for a in _evaluate_one(catalog, one, user_id, NOW).active
        )
        assert single == want, (user_id, single, want)


# -- the SQL writers ------------------------------------------------------------------------

SEGMENTS = ("W_A", "W_B", "W_C", "W_D")  # W_A, W_B in group WG; W_C alone; W_D plain


def _state(session, user_id: int, at: datetime) -> membership_rule.State:
    """The rule's state of the user now, from the database (rows, exclusions, the catalog)."""
    view = user_view(session, user_id, at)
    explicit = set(
        session.scalars(
            sa.text(
                "SELECT segment_id FROM memberships WHERE user_id = :u AND (expires_at IS NULL OR expires_at > :t)"
            ),
            {"u": user_id, "t": at},
        )
    )
    excluded = set(
        session.scalars(
            sa.text("SELECT segment_id FROM rollout_exclusions WHERE user_id = :u"), {"u": user_id}
        )
    )
    return membership_rule.State(
        {
            sid: membership_rule.Segment(
                slug=s.slug,
                covered=sid in view.rollout_ids,
                group=view.catalog.group_of.get(sid),
                explicit=sid in explicit,
                excluded=sid in excluded,
            )
            for sid, s in view.catalog.segments.items()
        }
    )


def _stored(session, user_id: int, after: int) -> list[tuple[int, str, bool]]:
    return [
        (row.segment_id, row.action, row.visible)
        for row in session.scalars(
            sa.select(MembershipEvent)
            .where(MembershipEvent.user_id == user_id, MembershipEvent.id > after)
            .order_by(MembershipEvent.segment_id)
        )
    ]


def _last_event(session) -> int:
    return session.scalar(sa.text("SELECT coalesce(max(id), 0) FROM membership_events"))


prior_ops = st.lists(st.tuples(st.sampled_from(("add", "del")), st.sampled_from(SEGMENTS)), max_size=4)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    percents=st.tuples(*(st.sampled_from((0, 30, 60, 100)) for _ in SEGMENTS)),
    user_id=st.integers(1, 500),
    prior=prior_ops,
    change=st.tuples(
        st.lists(st.sampled_from(SEGMENTS), max_size=2, unique=True),
        st.lists(st.sampled_from(SEGMENTS), max_size=2, unique=True),
    ),
    writer=st.sampled_from(("user", "bulk_add", "bulk_remove")),
)
def test_sql_writers_store_exactly_the_rules_flips(db_session, percents, user_id, prior, change, writer):
    nested = db_session.begin_nested()
    try:
        a, b, c, d = percents
        create_segment(db_session, "W_A", rollout_percent=min(a, 50), exclusion_group="WG", now=NOW)
        create_segment(db_session, "W_B", rollout_percent=min(b, 50), exclusion_group="WG", now=NOW)
        create_segment(db_session, "W_C", rollout_percent=c, now=NOW)
        create_segment(db_session, "W_D", rollout_percent=d, now=NOW)
        ids = dict(
            db_session.execute(sa.text("SELECT slug, id FROM segments WHERE deleted_at IS NULL")).all()
        )
        at = NOW + timedelta(seconds=1)
        for kind, slug in prior:  # a random prior state (refused changes leave nothing)
            at += timedelta(seconds=1)
            try:
                with db_session.begin_nested():
                    add, delete = ([AddSpec(slug)], []) if kind == "add" else ([], [slug])
                    change_user_segments(db_session, user_id, add, delete, now=at)
            except Exception:
                pass
        at += timedelta(seconds=1)
        before = _state(db_session, user_id, at)
        mark = _last_event(db_session)
        add, delete = change
        delete = [s for s in delete if s not in add]
        try:
            with db_session.begin_nested():
                if writer == "user":
                    change_user_segments(db_session, user_id, [AddSpec(s) for s in add], delete, now=at)
                    steps = [("add", s) for s in add] + [("remove", s) for s in delete]
                elif writer == "bulk_add" and add:
                    bulk_add(db_session, add[0], [user_id], now=at)
                    steps = [("add", add[0])]
                elif writer == "bulk_remove" and delete:
                    bulk_remove(db_session, delete[0], [user_id], now=at)
                    steps = [("remove", delete[0])]
                else:
                    return
        except Exception as exc:  # refused (a group conflict, nothing to do): nothing stored
            assert getattr(exc, "status", None) in (409, 422), exc
            assert _stored(db_session, user_id, mark) == []
            return
        changes = [
            membership_rule.Change(ids[slug], kind, slug, exclude=kind == "remove") for kind, slug in steps
        ]
        _, flips = membership_rule.step(before, changes)
        expected_visible = sorted(
            (sid, action.value) for sid, action in flips if sid in {c.segment_id for c in changes}
        )
        stored = _stored(db_session, user_id, mark)
        assert sorted((sid, action) for sid, action, visible in stored if visible) == expected_visible, (
            steps,
            before,
            stored,
        )
        # Every flip of a segment the change touched is a visible row; the rows that flipped
        # nothing are stored invisible, never doubled.
        assert len({(sid, action) for sid, action, _ in stored}) == len(stored)
        # And the reads agree with the rule's state after the change.
        after_state = _state(db_session, user_id, at)
        assert after_state.members() == membership_rule.step(before, changes)[0].members()
        assert {s.slug for s in user_view(db_session, user_id, at).active} == {
            ids_slug for ids_slug, sid in ids.items() if sid in after_state.members()
        }
    finally:
        nested.rollback()  # segments and rows of this example go
