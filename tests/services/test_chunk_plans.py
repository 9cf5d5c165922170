"""Chunks of big operations plan the same on stale statistics (issue 28): a segment filled after
the last ANALYZE (autovacuum has not come by yet) is exactly when a 1M-member deletion ran its
first chunk for minutes: ``DELETE … USING (SELECT … ORDER BY user_id LIMIT n)`` planned, on an
estimate of one row for the segment, as a nested loop re-reading the window for every row of
the segment. The chunks now read a keyset window and work on a plain range of the
``(segment_id, user_id)`` index; these tests fill a segment behind the statistics' back, capture
every statement the chunks run, EXPLAIN them in that state and look for the trap."""

from __future__ import annotations

import re

import sqlalchemy as sa

from webapp.services.membership import bulk
from webapp.services.segments.lifecycle import create_segment

MEMBERS = 30_000


def _stale_fill(session, slug: str, first: int = 1) -> int:
    """A segment whose MEMBERS rows the statistics do not know (analysed just before the fill)."""
    segment = create_segment(session, slug)
    session.execute(sa.text("ANALYZE memberships"))
    session.execute(sa.text("ANALYZE bulk_operation_ids"))
    session.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at) "
            "SELECT g, :s, now() - interval '1 hour' FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
        ),
        {"s": segment.id, "a": first, "b": first + MEMBERS - 1},
    )
    return segment.id


def _run_capturing(session, operation, touching: str) -> list[str]:
    """Run the operation's chunks to the end; the plans (EXPLAIN, in the state each statement
    met) of the statements matching ``touching``."""
    connection = session.connection()
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if re.search(touching, statement) and not statement.startswith("EXPLAIN"):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    sa.event.listen(connection, "before_cursor_execute", explain)
    try:
        chunks = 1
        while bulk.run_chunk(session, operation):
            chunks += 1
    finally:
        sa.event.remove(connection, "before_cursor_execute", explain)
    assert chunks >= MEMBERS // bulk.CHUNK
    return plans


def _no_nested_loop_over_the_segment(plans: list[str]) -> None:
    assert plans
    for plan in plans:
        assert "Join Filter" not in plan and "Nested Loop" not in plan.split("CTE kept")[0], plan
        assert re.search(r"Index Cond: .*user_id > .*user_id <= ", plan) or "Index Only Scan" in plan, plan


def test_a_deletions_chunks_work_on_index_ranges_on_stale_statistics(db_session):
    segment_id = _stale_fill(db_session, "PLAN_DEL")
    members, operation = bulk.delete_segment(db_session, "PLAN_DEL", actor="t")
    assert members == MEMBERS and operation is not None
    plans = _run_capturing(db_session, operation, r"FROM memberships")
    _no_nested_loop_over_the_segment([p for p in plans if "Delete on memberships" in p])
    assert len([p for p in plans if "Delete on memberships" in p]) == MEMBERS // bulk.CHUNK
    left = db_session.scalar(
        sa.text("SELECT count(*) FROM memberships WHERE segment_id = :s"), {"s": segment_id}
    )
    kept = db_session.scalar(
        sa.text("SELECT count(*) FROM retired_memberships WHERE segment_id = :s"), {"s": segment_id}
    )
    events = db_session.scalar(
        sa.text(
            "SELECT count(*) FROM membership_events WHERE segment_id = :s AND reason = 'segment_deleted'"
        ),
        {"s": segment_id},
    )
    assert (left, kept, events, operation.done, operation.cursor) == (0, MEMBERS, MEMBERS, MEMBERS, MEMBERS)


def test_a_replaces_removal_windows_lock_by_id_on_stale_statistics(db_session):
    segment_id = _stale_fill(db_session, "PLAN_REP")
    listed = list(range(MEMBERS // 2 + 1, MEMBERS // 2 + 1 + 2 * bulk.SYNC_LIMIT))  # half of them members
    operation = bulk.bulk_replace(db_session, "PLAN_REP", listed)
    assert isinstance(operation, bulk.BulkOperation)
    plans = _run_capturing(db_session, operation, r"FROM memberships m WHERE .* FOR UPDATE")
    for plan in plans:  # the rows leaving, locked by id: no anti-join against the staged ids
        assert "Anti Join" not in plan and "bulk_operation_ids" not in plan, plan
    members = db_session.scalars(
        sa.text("SELECT user_id FROM memberships WHERE segment_id = :s ORDER BY user_id"), {"s": segment_id}
    ).all()
    assert members == listed and operation.removed == MEMBERS // 2
