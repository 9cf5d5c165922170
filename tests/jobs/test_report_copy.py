"""The all-users history report streamed by PostgreSQL (issue 28): ``COPY (…) TO STDOUT`` of
lines built in SQL must give the very bytes the Python writer gave (SQLAlchemy rows merged with
the pending expiries by ``heapq.merge``, ``neutralise`` per cell, ``csv.writer``), in every
format: the API's CSV, the spreadsheet CSV with either separator, and the seed's ``/download``
(converted from the file). The oracle below is that writer as it was (kept here only), run on
the same history: adds, removals, TTLs expired but not purged, deleted and restored segments,
bulk operations, and stored text no client could send (slugs and actors with formula
characters, quotes, separators, line breaks, tabs, backslashes, unicode), ties in time."""

from __future__ import annotations

import csv
import heapq
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import current_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import literal, select

from webapp.models import Membership, MembershipEvent, Segment
from webapp.models.enums import Action, Reason
from webapp.services.history import reports
from webapp.services.membership.bulk import bulk_add, bulk_remove, delete_segment
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.restore import restore_segment
from webapp.services.segments.lifecycle import create_segment

T0 = datetime(2025, 5, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=40)  # the report's moment: every TTL below has run out by then
FORMATS = [(None, None), ("spreadsheet", ","), ("spreadsheet", ";")]


# -- the oracle: the writer before issue 28 (webapp/services/history/reports.py at a807e70) --------


def _old_pending(start, end, now):
    return (
        select(
            Membership.user_id,
            Segment.slug,
            literal(Action.REMOVED.value),
            Membership.expires_at,
            literal(Reason.TTL.value),
            literal("system"),
        )
        .join(Segment, Segment.id == Membership.segment_id)
        .where(Membership.expires_at >= start, Membership.expires_at < end, Membership.expires_at <= now)
    )


def _old_all_history(session, start, end, now):
    stored = (
        select(
            MembershipEvent.user_id,
            MembershipEvent.segment_slug,
            MembershipEvent.action,
            MembershipEvent.occurred_at,
            MembershipEvent.reason,
            MembershipEvent.actor,
        )
        .where(
            MembershipEvent.occurred_at >= start, MembershipEvent.occurred_at < end, MembershipEvent.visible
        )
        .order_by(MembershipEvent.occurred_at, MembershipEvent.id)
    )
    # (the old query ordered pending rows by expiry and user only: ties across segments came in
    # whatever order PostgreSQL gave; the new order breaks them by segment id, as here)
    pending = _old_pending(start, end, now).order_by(
        Membership.expires_at, Membership.user_id, Membership.segment_id
    )
    merged = heapq.merge(session.execute(stored), session.execute(pending), key=lambda row: row[3])
    for row in merged:
        yield tuple(row)


def old_bytes(session, report, now) -> tuple[int, bytes]:
    start = reports.parse_bound(report.params["from"], "from")
    end = reports.parse_bound(report.params["to"], "to")
    sheet = reports.is_spreadsheet(report)
    handle = io.StringIO(newline="")
    if sheet:
        writer = reports.csv_writer(handle, report.params.get("separator", ","))
        header, shape = reports.SHEET_HISTORY_HEADER, reports._sheet_entry
    else:
        writer = csv.writer(handle, delimiter=";", lineterminator="\n")
        header, shape = reports.HISTORY_HEADER, reports._csv_entry
    writer.writerow(header)
    count = 0
    for row in _old_all_history(session, start, end, now):
        writer.writerow([reports.neutralise(c) for c in shape(row)])
        count += 1
    return count, handle.getvalue().encode("utf-8")


def new_bytes(session, report, now) -> tuple[int, bytes]:
    progress: list[tuple[int, int]] = []
    count, path = reports.write_csv(
        session, report, lambda done, total: progress.append((done, total)), now=now
    )
    return count, path.read_bytes()


def both(session, now=NOW, period="2025-05", **fmt) -> tuple[bytes, bytes]:
    report = reports.request_report(session, period=period, **fmt)
    rows, expected = old_bytes(session, report, now)
    count, got = new_bytes(session, report, now)
    assert count == rows
    return expected, got


# -- history to report ------------------------------------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://x";"y")',
    "+1",
    "-2;3",
    "@SUM(A1)",
    "\tTAB",
    "\rCR first",
    "a\rb",
    "line\nbreak",
    "crlf\r\nmid",
    'say "hi"',
    "comma,semi;",
    "back\\slash \\n not a newline",
    "uni ☃ é 😀",
    "ctrl \x01\x08\x0b\x0c\x1f end",
    "",
    " lead space",
]


def _segment(session, slug: str) -> int:
    """A segment row with any slug (the app refuses such slugs; stored data may still hold them)."""
    return session.scalar(
        sa.text(
            "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
            "VALUES (:slug, '', 0, 'x', :at) RETURNING id"
        ),
        {"slug": slug, "at": T0},
    )


def _event(session, user, segment_id, slug, action, reason, at, actor, visible=True):
    session.execute(
        sa.text(
            "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, "
            "actor, visible) VALUES (:u, :s, :slug, :a, :r, :at, :actor, :v)"
        ),
        {
            "u": user,
            "s": segment_id,
            "slug": slug,
            "a": action,
            "r": reason,
            "at": at,
            "actor": actor,
            "v": visible,
        },
    )


def build_history(session, hostile: bool = True) -> None:
    create_segment(session, "CP_A", now=T0)
    create_segment(session, "CP_B", rollout_percent=50, now=T0)
    create_segment(session, "CP_TTL", now=T0)
    # per-user changes, actors with formula characters, quotes, separators, breaks
    for i, actor in enumerate(HOSTILE[:8]):
        change_user_segments(
            session, 100 + i, [AddSpec("CP_A")], now=T0 + timedelta(hours=i, microseconds=i * 7), actor=actor
        )
    change_user_segments(session, 100, [], ["CP_A"], now=T0 + timedelta(days=1), actor="=cmd|' /C calc'!A0")
    change_user_segments(
        session, 101, [AddSpec("CP_B")], ["CP_A"], now=T0 + timedelta(days=1), reason=Reason.DASHBOARD
    )
    # TTLs that ran out, not purged: the same instant for several users and segments (ties)
    ttl_end = T0 + timedelta(days=3)
    for user in (300, 301, 302):
        change_user_segments(
            session,
            user,
            [AddSpec("CP_TTL", expires_at=ttl_end), AddSpec("CP_A", expires_at=ttl_end)],
            now=T0,
        )
    # a stored row at exactly that instant: stored comes before pending
    change_user_segments(session, 303, [AddSpec("CP_A")], now=ttl_end, actor="tie")
    # bulk add and remove (one instant per chunk), a deleted and restored segment
    bulk_add(session, "CP_A", list(range(1000, 1300)), now=T0 + timedelta(days=5), actor="bulk,actor")
    bulk_remove(session, "CP_A", list(range(1000, 1100)), now=T0 + timedelta(days=6), actor='bulk "rm"')
    create_segment(session, "CP_DEL", now=T0)
    bulk_add(session, "CP_DEL", list(range(2000, 2050)), now=T0 + timedelta(days=7))
    change_user_segments(
        session,
        2100,
        [AddSpec("CP_DEL", expires_at=T0 + timedelta(days=7, hours=1))],
        now=T0 + timedelta(days=7),
    )
    delete_segment(session, "CP_DEL", actor="deleter;x", now=T0 + timedelta(days=8))
    restore_segment(session, "CP_DEL", actor="+restorer", now=T0 + timedelta(days=9))
    if hostile:
        _hostile_rows(session)
    # outside the month (left out) and in the month but after the report's moment (not yet pending)
    _event(session, 8, 1, "CP_A", "added", "api", T0 - timedelta(microseconds=1), "before")
    change_user_segments(session, 9, [AddSpec("CP_A", expires_at=NOW + timedelta(days=100))], now=T0)
    session.flush()


def _hostile_rows(session) -> None:
    """Stored text no client could send: hostile slugs and actors, invisible rows, a negative id."""
    for i, text in enumerate(HOSTILE):
        seg = _segment(session, f"HOSTILE_{i}")
        at = T0 + timedelta(days=10, seconds=i)
        _event(session, 500 + i, seg, text, "added", "api", at, text)
        _event(session, 600 + i, seg, f"S{i}", "removed", "dashboard", at, text, visible=(i % 3 != 0))
    _event(session, -7, 1, "CP_A", "added", "api", T0 + timedelta(days=11), "neg")
    _event(session, 7, 1, "CP_A", "added", "api", T0 + timedelta(days=11, microseconds=1), "\\")
    # pending expiries in segments with hostile slugs (their rows, expired, not purged)
    for i, slug in enumerate(["=BAD", 'q"uote', "new\nline", "semi;colon,comma", "\rcr"]):
        seg = _segment(session, slug)
        session.execute(
            sa.text(
                "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) VALUES "
                "(:u, :s, :at, :exp), (:u2, :s, :at, :exp)"
            ),
            {"u": 700 + i, "u2": 300, "s": seg, "at": T0, "exp": T0 + timedelta(days=12, seconds=i % 2)},
        )


@pytest.mark.parametrize(("format", "separator"), FORMATS)
def test_copy_gives_the_python_writers_bytes(db_session, format, separator):
    build_history(db_session)
    expected, got = both(db_session, format=format, separator=separator)
    assert got == expected
    # the history really holds what the test claims: hostile cells quoted and neutralised,
    # pending expiries, restored rows
    text = got.decode()
    assert "'=HYPERLINK" in text and ("'=cmd|" in text) == (format is not None)  # (actors: spreadsheet only)
    assert text.count(";removed;" if format is None else f"{separator}removed{separator}") > 10
    assert "'@SUM(A1)" in text and "'-7" in text and "line\nbreak" in text
    assert expected.count(b"300") >= 7  # user 300's ttl removals (pending) and adds


def test_the_seeds_download_of_app_made_history(db_session):
    """The seed's ``/download`` converts the file as it streams: the same file, the same bytes
    (on history the app itself writes: the seed's reader takes the API format's rows back)."""
    build_history(db_session, hostile=False)
    expected, got = both(db_session)
    assert got == expected and got.count(b"\n") > 400

    def convert(data: bytes) -> bytes:
        return b"".join(reports.seed_csv(io.StringIO(data.decode(), newline="")))

    assert convert(got) == convert(expected)


def test_a_month_without_rows_and_one_with_only_pending_expiries(db_session):
    create_segment(db_session, "CP_ONLY", now=T0)
    db_session.flush()
    expected, got = both(db_session, period="2025-03")
    assert got == expected == b"user_id;segment;operation;timestamp\n"
    seg = _segment(db_session, "PENDING_ONLY")
    db_session.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT g, :s, :at, :exp FROM generate_series(1, 50) g"
        ),
        {"s": seg, "at": T0 - timedelta(days=60), "exp": datetime(2025, 3, 5, tzinfo=UTC)},
    )
    for fmt, sep in FORMATS:
        expected, got = both(db_session, period="2025-03", format=fmt, separator=sep)
        assert got == expected and expected.count(b"PENDING_ONLY") == 50


def test_progress_is_told_with_the_total(db_session, monkeypatch):
    monkeypatch.setitem(current_app.config, "REPORT_PROGRESS_MS", 0)  # (every block)
    monkeypatch.setattr(reports, "_COPY_BLOCK", 5)
    build_history(db_session)
    report = reports.request_report(db_session, period="2025-05")
    seen: list[tuple[int, int]] = []
    count, _ = reports.write_csv(db_session, report, lambda done, total: seen.append((done, total)), now=NOW)
    assert seen and all(total == count for _, total in seen)
    assert [done for done, _ in seen] == list(range(5, count, 5))  # not at the end (finishing says it)


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
) | st.sampled_from(HOSTILE)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(st.tuples(TEXT, TEXT, st.integers(0, 10**6), st.booleans()), min_size=1, max_size=6),
    fmt=st.sampled_from(FORMATS),
)
def test_any_stored_text_gives_the_same_bytes(db_session, cells: list[Any], fmt):
    """Whatever a slug or an actor holds (stored by hand: the app's rules are narrower), any
    instant (microseconds or not), stored or pending: the same bytes as the Python writer."""
    db_session.execute(sa.text("SAVEPOINT example"))
    for i, (slug, actor, micros, pending) in enumerate(cells):
        at = T0 + timedelta(days=2, microseconds=micros)
        if pending:
            seg = _segment(db_session, slug + f"#{i}")
            db_session.execute(
                sa.text(
                    "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) VALUES (:u, :s, :a, :e)"
                ),
                {"u": 10 + i, "s": seg, "a": T0, "e": at},
            )
        else:
            _event(db_session, 10 + i, 1, slug, "added", "api", at, actor)
    expected, got = both(db_session, format=fmt[0], separator=fmt[1])
    assert got == expected
    db_session.execute(sa.text("ROLLBACK TO SAVEPOINT example"))
    db_session.expire_all()
