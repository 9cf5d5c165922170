"""CSV reports: request (validated, queued after commit), write (streaming), retention.

Kinds:
- ``user_history``: one user's history for a period, rollout entries included;
- ``all_history``: every stored change in a period (explicit changes, TTL expiries,
  segment deletions; rollout populations are not enumerated: they cover all users);
- ``segment_members``: the members of a segment now that are a list of users
  (``export_members``: in the request up to ``EXPORT_IN_REQUEST`` members, else queued like the
  others): its explicit members, and for a segment in rule mode the users in through its rules
  too (each once, with its ``source``); a rollout's share of every user id is not listed.

Formats (``params["format"]``, absent for the API's own):
- ``csv`` (default): ``;``-separated, no BOM, ``\n``, ISO 8601 times; exactly what the API
  served before the dashboard's format existed (its clients parse it);
- ``spreadsheet``: for a spreadsheet in any locale: UTF-8 with a BOM, ``params["separator"]``
  (``,`` or ``;``), ``\r\n``, times ``YYYY-MM-DD HH:MM:SS`` (UTC, which spreadsheets read as
  dates), and the history's ``reason`` and ``actor`` (members: ``source``) columns.

A segment in rule mode's export in the ``csv`` format has one more column, last: ``source``
(``explicit`` or ``rule``), so the four columns its clients parse stay where they were; a plain
segment's file is byte for byte what it was (docs/design.md, *Member exports of rule segments*).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from flask import current_app, has_app_context
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import BigInteger, Select, cast, func, literal, select, text

from webapp.errors import AppError, NotFound, ValidationFailed, detail
from webapp.models import Membership, MembershipEvent, Report, Segment
from webapp.models.enums import Action, Reason, ReportKind, ReportStatus, Source
from webapp.platform.queue import enqueue_after_commit
from webapp.rules import PERIOD_RE, parse_moment, problem_code
from webapp.services.common import DbSession, check_user_id, iso, utcnow
from webapp.services.history import replay as history
from webapp.services.reads.rule import MATCH_VISIBLE
from webapp.services.segments.lifecycle import get_live_segment

log = logging.getLogger(__name__)
HISTORY_HEADER = ("user_id", "segment", "operation", "timestamp")
MEMBERS_HEADER = ("user_id", "segment", "added_at", "expires_at")
RULE_MEMBERS_HEADER = (*MEMBERS_HEADER, "source")  # a segment in rule mode, the API's format
SHEET_HISTORY_HEADER = ("user_id", "segment", "operation", "time_utc", "reason", "actor")
SHEET_MEMBERS_HEADER = ("user_id", "segment", "source", "added_utc", "expires_utc")
CSV_FORMAT, SHEET_FORMAT = "csv", "spreadsheet"
FORMATS = (CSV_FORMAT, SHEET_FORMAT)
SEPARATORS = (",", ";")
EXPORT_IN_REQUEST = 10_000  # members a segment export writes within the request; more: a job
PROGRESS_EVERY = 20_000
GENERATE_JOB = "webapp.jobs.tasks.generate_report"
REPORT_LOCK_SPACE = 2  # advisory lock space (two-int form) for report deduplication


def parse_period(period: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """``YYYY-MM`` or ISO ``from``/``to`` dates -> a half-open UTC range ``[from, to)``."""
    if period is not None:
        if start is not None or end is not None:
            raise ValidationFailed(
                "give period or from/to, not both",
                [detail("period", "not with from/to", code="period_and_range")],
            )
        match = PERIOD_RE.fullmatch(period) if isinstance(period, str) else None
        if not match or not 1 <= int(match[2]) <= 12 or not 1970 <= int(match[1]) <= 9998:
            raise ValidationFailed(
                "period must be a month written YYYY-MM, from 1970-01 to 9998-12",
                [detail("period", "must be YYYY-MM", code="period_invalid", value=str(period)[:20])],
            )
        first = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
        nxt = datetime(first.year + first.month // 12, first.month % 12 + 1, 1, tzinfo=UTC)
        return first, nxt
    if start is None or end is None:
        raise ValidationFailed(
            "give period (YYYY-MM) or both from and to",
            [detail("period", "required unless from and to are given", code="period_required")],
        )
    bounds = [parse_bound(value, name) for value, name in ((start, "from"), (end, "to"))]
    if bounds[0] >= bounds[1]:
        raise ValidationFailed(
            "from must be before to", [detail("from", "must be before to", code="range_reversed")]
        )
    return bounds[0], bounds[1]


def parse_bound(value: object, name: str) -> datetime:
    """An ISO 8601 date or datetime (naive = UTC) as aware UTC; ValidationFailed otherwise."""
    try:
        return parse_moment(str(value))
    except ValueError as exc:
        raise ValidationFailed(
            f"{name} {exc}", [detail(name, str(exc), code=problem_code(exc), value=str(value)[:40])]
        ) from None


def request_report(
    session: DbSession,
    *,
    kind: ReportKind | str | None = None,
    user_id: int | None = None,
    segment: str | None = None,
    period: str | None = None,
    start: str | None = None,
    end: str | None = None,
    requested_by: str = "",
    format: str | None = None,
    separator: str | None = None,
) -> Report:
    """Validate, store a queued report and enqueue its job once the transaction commits.
    ``format``/``separator``: see the module's docstring (``file_format``)."""
    kind = kind or (
        ReportKind.SEGMENT_MEMBERS
        if segment
        else ReportKind.USER_HISTORY
        if user_id is not None
        else ReportKind.ALL_HISTORY
    )
    if kind not in set(ReportKind):
        raise ValidationFailed(
            f"kind must be one of {', '.join(ReportKind)}",
            [detail("kind", "unknown kind", code="report_kind_invalid")],
        )
    kind = ReportKind(kind)
    params: dict[str, Any] = {}
    if kind == ReportKind.SEGMENT_MEMBERS:
        params["segment"] = get_live_segment(session, segment or "").slug
    else:
        first, last = parse_period(period, start, end)
        if period is not None and first > utcnow():  # as the dashboard refuses it (checked_month)
            raise ValidationFailed(
                f"period {period} has not started: a report of a month to come would be empty",
                [
                    detail(
                        "period",
                        "must be the current month or an earlier one",
                        code="period_future",
                        value=period,
                        period=period,
                    )
                ],
            )
        params.update({"from": iso(first), "to": iso(last)})
        if period is not None:
            params["period"] = period
        if kind == ReportKind.USER_HISTORY:
            if user_id is None:
                raise ValidationFailed(
                    "user_id is required for a user report", [detail("user_id", "required", code="required")]
                )
            params["user_id"] = check_user_id(user_id)
    params.update(file_format(format, separator))
    return _queue_once(session, kind, params, requested_by)


def file_format(format: str | None, separator: str | None) -> dict[str, str]:
    """The params a format adds: nothing for the API's own (``csv``, the default), so its
    reports' params stay as they were; ``{"format": "spreadsheet", "separator": ...}`` (``,`` by
    default) for the spreadsheet format. A separator belongs to the spreadsheet format only."""
    if format not in (None, *FORMATS):
        raise ValidationFailed(
            f"format must be one of {', '.join(FORMATS)}",
            [detail("format", "unknown format", code="report_format_invalid", value=str(format)[:20])],
        )
    if separator is not None and (format != SHEET_FORMAT or separator not in SEPARATORS):
        raise ValidationFailed(
            'separator must be "," or ";", with format "spreadsheet"',
            [detail("separator", 'must be "," or ";"', code="separator_invalid", value=str(separator)[:5])],
        )
    if format != SHEET_FORMAT:
        return {}
    return {"format": SHEET_FORMAT, "separator": separator or ","}


def is_spreadsheet(report: Report) -> bool:
    return (report.params or {}).get("format") == SHEET_FORMAT


def export_members(
    session: DbSession,
    slug: str,
    *,
    requested_by: str = "",
    format: str | None = None,
    separator: str | None = None,
    now: datetime | None = None,
) -> Report:
    """A CSV of the segment's members now that are a list of users: its explicit members (TTL
    ones with their expiry; the expired left out exactly as reads leave them out) and, for a
    segment in rule mode, the users in through its rules (:data:`MEMBERS_SQL`). Up to
    ``EXPORT_IN_REQUEST`` members it is written here and comes back finished; a larger segment
    is queued (the worker streams it) and comes back queued. A plain segment's rollout members
    are not listed: a rollout is a share of every possible user id, not a list
    (docs/dashboard.md, *Export members*)."""
    now = now or utcnow()
    segment = get_live_segment(session, slug)
    params: dict[str, Any] = {"segment": segment.slug, **file_format(format, separator)}
    if member_total(session, segment, now) > EXPORT_IN_REQUEST:
        return _queue_once(session, ReportKind.SEGMENT_MEMBERS, params, requested_by, now=now)
    report = Report(
        id=uuid.uuid4(),
        kind=ReportKind.SEGMENT_MEMBERS,
        params=params,
        status=ReportStatus.RUNNING,
        progress=0,
        rows=0,
        size_bytes=0,
        created_at=now,
        requested_by=requested_by,
    )
    count, path = write_csv(session, report, lambda done, total: None, now=now)
    report.status, report.progress, report.rows = ReportStatus.FINISHED, 100, count
    report.path, report.size_bytes, report.finished_at = str(path), path.stat().st_size, utcnow()
    session.add(report)
    session.flush()
    return report


PENDING = (ReportStatus.QUEUED, ReportStatus.RUNNING)


def _queue_once(
    session: DbSession,
    kind: ReportKind,
    params: dict[str, Any],
    requested_by: str = "",
    *,
    identity: dict[str, Any] | None = None,
    share_for: timedelta | None = None,
    now: datetime | None = None,
) -> Report:
    """A new queued report, or the identical one still pending (a repeated request, such as
    a GET retried by a client, creates no new work). "Identical": same kind and requester, and
    the same values of ``identity`` (default: all ``params``) — pending for less than
    ``share_for`` when given. Identical requests are serialised by a transaction-scoped
    advisory lock, so concurrent duplicates share one."""
    now = now or utcnow()
    identity = params if identity is None else identity
    key = json.dumps([kind, identity, requested_by], sort_keys=True)
    session.execute(
        text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"), {"space": REPORT_LOCK_SPACE, "key": key}
    )
    shared = select(Report).where(
        Report.kind == kind,
        Report.status.in_(PENDING),
        Report.requested_by == requested_by,
        *(Report.params[k].as_string() == str(v) for k, v in identity.items()),
    )
    if share_for is not None:
        shared = shared.where(Report.created_at > now - share_for)
    report = session.scalars(shared.order_by(Report.created_at.desc()).limit(1)).first()
    if report is not None:
        return report
    report = Report(
        id=uuid.uuid4(),
        kind=kind,
        params=params,
        status=ReportStatus.QUEUED,
        progress=0,
        rows=0,
        size_bytes=0,
        created_at=now,
        requested_by=requested_by,
    )
    session.add(report)
    session.flush()
    enqueue_report(report)
    return report


def enqueue_report(report: Report) -> None:
    """Queue the report's job once the transaction commits (the reaper re-queues it if Redis
    was unreachable then)."""
    enqueue_after_commit(GENERATE_JOB, str(report.id), job_id=report_job_id(report.id))


def report_job_id(report_id: object) -> str:
    return f"report-{report_id}"


def get_report(session: DbSession, report_id: str, reader: str | None = None) -> Report:
    """The report; with ``reader`` (an API client's name) only one that client requested:
    others' reports are "no such report" to it, so their existence does not leak."""
    try:
        key = uuid.UUID(str(report_id))
    except ValueError:
        raise NotFound(
            "no such report",
            [detail("id", "not a report id", code="unknown_report", value=str(report_id)[:40])],
        ) from None
    report = session.get(Report, key)
    if report is None or (reader is not None and report.requested_by != reader):
        raise NotFound(
            "no such report", [detail("id", "no such report", code="unknown_report", value=str(report_id))]
        )
    return report


def list_reports(
    session: DbSession, limit: int = 50, *, user_id: int | None = None, segment: str | None = None
) -> list[Report]:
    """The latest reports, newest first; with ``user_id``, only that user's history reports;
    with ``segment``, only that segment's member exports.
    User ids are 64-bit: the JSON parameter is compared as a bigint (a 32-bit cast failed on
    any stored id above 2**31 - 1, for every user's page)."""
    stmt = select(Report).order_by(Report.created_at.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(
            Report.kind == ReportKind.USER_HISTORY,
            cast(Report.params["user_id"].as_string(), BigInteger) == user_id,
        )
    if segment is not None:
        stmt = stmt.where(
            Report.kind == ReportKind.SEGMENT_MEMBERS, Report.params["segment"].as_string() == segment
        )
    return list(session.scalars(stmt))


def report_path(report: Report) -> Path:
    return Path(current_app.config["REPORTS_DIR"]) / f"{report.id}.csv"


def finished_file(report: Report) -> Path:
    """The finished report's CSV file; AppError (400 not_ready) while it is not there yet."""
    path = report_path(report)
    if report.status != ReportStatus.FINISHED or not path.exists():
        raise AppError(
            f"report is {report.status}, not ready for download",
            [detail("id", "not ready", code="report_not_ready", status=str(report.status))],
            code="not_ready",
        )
    return path


def download_name(report: Report, unique: bool = False) -> str:
    """The attachment's file name. The API's own format keeps the name it always had
    (``history-user-42-2026-12.csv``); with ``unique`` (the dashboard's downloads) or in the
    spreadsheet format, the request's time (UTC, to the second) and the start of the report's
    id follow, so no two reports share a name: ``history-user-42-2026-12_20261203-140327_5f3a1c.csv``."""
    p = report.params
    if report.kind == ReportKind.SEGMENT_MEMBERS:
        stem = f"members-{p['segment']}"
    else:
        period = p.get("period") or f"{p['from'][:10]}_{p['to'][:10]}"
        who = f"user-{p['user_id']}" if report.kind == ReportKind.USER_HISTORY else "all-users"
        stem = f"history-{who}-{period}"
    if not (unique or is_spreadsheet(report)):
        return f"{stem}.csv"
    return f"{stem}_{report.created_at.astimezone(UTC):%Y%m%d-%H%M%S}_{report.id.hex[:6]}.csv"


# -- writing ---------------------------------------------------------------------------------


# Spreadsheet formula injection guard (OWASP): a cell starting with one of these gets a ``'``
# first. The one rule for both writers: :func:`neutralise` (Python) and :func:`_sql_cell` (SQL).
RISKY_LEAD = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: object) -> str:
    """Spreadsheet formula injection guard (OWASP): prefix risky leading characters."""
    text = "" if cell is None else str(cell)
    return "'" + text if text[:1] in RISKY_LEAD else text


def write_csv(
    session: DbSession, report: Report, on_progress: Callable[[int, int], None], now: datetime | None = None
) -> tuple[int, Path]:
    """Stream the report's rows into REPORTS_DIR/<id>.csv (atomically) in the report's format;
    returns (rows, path)."""
    sheet = is_spreadsheet(report)
    if report.kind == ReportKind.ALL_HISTORY:
        return _copy_all_history(session, report, on_progress, now or utcnow())
    if report.kind == ReportKind.SEGMENT_MEMBERS:
        return _copy_members(session, report, on_progress, now or utcnow())
    total, rows = _rows(session, report, now or utcnow())
    header: tuple[str, ...]
    shape: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    header, shape = (SHEET_HISTORY_HEADER, _sheet_entry) if sheet else (HISTORY_HEADER, _csv_entry)
    path = report_path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    count = 0
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        if sheet:
            writer = csv_writer(handle, report.params.get("separator", ","))
        else:  # the API's own format, byte for byte as it always was
            writer = csv.writer(handle, delimiter=";", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([neutralise(c) for c in shape(row)])
            count += 1
            if count % PROGRESS_EVERY == 0:
                on_progress(count, total)
    os.replace(partial, path)
    return count, path


def _dialect(report: Report) -> tuple[str, str]:
    """(separator, line end) of the report's format."""
    if is_spreadsheet(report):
        return report.params.get("separator", ","), "\r\n"
    return ";", "\n"


def _header_line(report: Report, header: tuple[str, ...]) -> str:
    """The file's start exactly as :func:`write_csv`'s writers put it (a BOM first in the
    spreadsheet format) with the header row."""
    buffer = io.StringIO(newline="")
    if is_spreadsheet(report):
        csv_writer(buffer, report.params.get("separator", ",")).writerow(header)
    else:
        csv.writer(buffer, delimiter=";", lineterminator="\n").writerow(header)
    return buffer.getvalue()


def csv_writer(handle: TextIO, separator: str) -> Any:
    """The spreadsheet format's writer: a BOM first (Excel then reads UTF-8), the separator,
    RFC 4180 line ends; cells holding the separator, a quote or a line break are quoted."""
    handle.write("\ufeff")
    return csv.writer(handle, delimiter=separator, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def sheet_time(moment: datetime | None) -> str:
    """``2026-12-03 14:03:27`` (UTC): a date and time every spreadsheet reads as one."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


# A row as stored: history (user_id, segment, operation, occurred_at, reason, actor). Each format
# shapes it. (Member exports and the all-users report are written by PostgreSQL: below.)
def _csv_entry(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row[0], row[1], row[2], iso(row[3])


def _sheet_entry(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row[0], row[1], row[2], sheet_time(row[3]), row[4], row[5]


def _rows(session: DbSession, report: Report, now: datetime) -> tuple[int, Iterable[tuple[Any, ...]]]:
    p = report.params
    start, end = parse_bound(p["from"], "from"), parse_bound(p["to"], "to")
    if report.kind == ReportKind.USER_HISTORY:
        entries = history.user_history(session, p["user_id"], start, end, now=now, causes=False)
        return (
            len(entries),
            ((e.user_id, e.segment, e.operation, e.occurred_at, e.reason, e.actor) for e in entries),
        )
    raise AssertionError(f"{report.kind} reports are written by COPY (_copy_all_history, _copy_members)")


def _pending_expiries(
    start: datetime, end: datetime, now: datetime
) -> Select[int, str, str, datetime | None, str, str]:
    """Expired memberships the purge has not reached yet (it will record exactly these)."""
    return (
        select(
            Membership.user_id,
            Segment.slug,
            literal(Action.REMOVED.value),
            Membership.expires_at,
            literal(Reason.TTL.value),
            literal("system"),  # as the purge will record them (membership_store)
        )
        .join(Segment, Segment.id == Membership.segment_id)
        .where(Membership.expires_at >= start, Membership.expires_at < end, Membership.expires_at <= now)
    )


def _count_all(session: DbSession, start: datetime, end: datetime, now: datetime) -> int:
    stored = session.scalar(
        select(func.count())
        .select_from(MembershipEvent)
        .where(
            MembershipEvent.occurred_at >= start, MembershipEvent.occurred_at < end, MembershipEvent.visible
        )
    )
    pending = session.scalar(select(func.count()).select_from(_pending_expiries(start, end, now).subquery()))
    return (stored or 0) + (pending or 0)


# -- all_history through COPY (issue 28): PostgreSQL formats and streams the rows -------------
#
# Each line is built in SQL exactly as ``csv.writer`` writes the row after ``neutralise`` (the
# Python writer above, still used for the other kinds): a cell starting with one of RISKY_LEAD
# gets its ``'``; a cell holding the separator, a double quote or a character of the line end is
# quoted (``"``, quotes doubled: QUOTE_MINIMAL); times as ``iso`` (ISO 8601, microseconds only
# when not zero, ``Z``) or ``sheet_time``. The stored rows and the pending expiries (memberships
# that have expired but the purge has not reached yet: it will record exactly these) are one
# UNION ALL in one ORDER BY: time, then stored before pending at the same instant, stored by id,
# pending by user then segment: the order of the Python merge this replaced (``heapq.merge`` of
# the two, which is stable), with the segment as the last tie-break it lacked.
#
# The lines leave by ``COPY (...) TO STDOUT`` in the text format, one column: its only escapes
# are a backslash before ``\``, ``b f n r t v`` (undone here, in the rare blocks holding a
# backslash), so every raw ``\n`` ends a row. (The CSV format quotes by rules of its own: ``""``
# for an empty cell, and any cell holding ``\r``, which ``csv.writer`` with a ``\n`` line end
# leaves bare.) tests/jobs/test_report_copy.py compares the bytes with the Python writer's on
# hostile data.

_COPY_BLOCK = 20_000  # rows per write (about 1 MB)
COPY_PROGRESS_MS = 1000  # between progress updates (each its own commit), unless REPORT_PROGRESS_MS says


def _progress_seconds() -> float:
    """Seconds between a COPY-written report's progress updates (REPORT_PROGRESS_MS)."""
    configured = current_app.config.get("REPORT_PROGRESS_MS") if has_app_context() else None
    return max(0, int(configured if configured is not None else COPY_PROGRESS_MS)) / 1000


_UNESCAPE = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_ESCAPED = re.compile(rb"\\(.)", re.S)


def _chr(char: str) -> str:
    return f"chr({ord(char)})"  # (constant-folded by the planner)


def _sql_cell(expr: str, separator: str, line_end: str) -> str:
    """SQL for a text cell as ``neutralise`` then ``csv.writer`` (QUOTE_MINIMAL) write it."""
    lead = ", ".join(_chr(c) for c in RISKY_LEAD)
    safe = f"(CASE WHEN left({expr}, 1) IN ({lead}) THEN chr(39) || {expr} ELSE {expr} END)"
    specials = dict.fromkeys((separator, '"', *line_end))  # (the quote itself is doubled)
    quoted = " OR ".join(f"strpos({expr}, {_chr(c)}) > 0" for c in specials)
    return f"(CASE WHEN {quoted} THEN chr(34) || replace({safe}, chr(34), chr(34) || chr(34)) || chr(34) ELSE {safe} END)"


def _sql_id(expr: str) -> str:
    """A user id as ``neutralise(str(id))`` writes it (a negative one would start with ``-``)."""
    return f"(CASE WHEN {expr} < 0 THEN chr(39) || {expr} ELSE {expr}::text END)"


ISO_SQL = "(replace(to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || 'Z')"
SHEET_TIME_SQL = "to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"


def all_history_sql(sheet: bool, separator: str, line_end: str) -> str:
    """The SELECT of an ``all_history`` report's lines (without their line end), in the file's
    order; psycopg parameters ``start``, ``end``, ``now`` and the pending expiries' ``removed``,
    ``ttl``, ``system`` (:func:`all_history_params`)."""

    def cell(expr: str) -> str:
        return _sql_cell(expr, separator, line_end)

    # (action and reason: a closed vocabulary, held to it by CHECK constraints, written as stored)
    cells = [_sql_id("r.user_id"), cell("r.slug"), "r.action"]
    if sheet:
        cells += [SHEET_TIME_SQL.format(t="r.at"), "r.reason", cell("r.actor")]
    else:
        cells.append(ISO_SQL.format(t="r.at"))
    return (
        f"SELECT {f' || {_chr(separator)} || '.join(cells)} FROM ("
        "SELECT e.user_id, e.segment_slug AS slug, e.action, e.occurred_at AS at, e.reason, e.actor, "
        "0 AS src, e.id AS k1, 0 AS k2 FROM membership_events e "
        "WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s AND e.visible "
        "UNION ALL "
        "SELECT m.user_id, s.slug, %(removed)s, m.expires_at, %(ttl)s, %(system)s, 1, m.user_id, m.segment_id "
        "FROM memberships m JOIN segments s ON s.id = m.segment_id "
        "WHERE m.expires_at >= %(start)s AND m.expires_at < %(end)s AND m.expires_at <= %(now)s"
        ") r ORDER BY r.at, r.src, r.k1, r.k2"
    )


def _plain(word: str) -> bool:
    """True when a cell holding ``word`` is written as it is in every format."""
    return not word.startswith(RISKY_LEAD) and not any(c in word for c in ',;"\r\n')


assert all(_plain(word) for word in (*Action, *Reason)), "a history word the SQL writer would not quote"


def all_history_params(start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "now": now,
        "removed": Action.REMOVED.value,
        "ttl": Reason.TTL.value,
        "system": "system",  # as the purge will record them (membership_store)
    }


def _copy_all_history(
    session: DbSession, report: Report, on_progress: Callable[[int, int], None], now: datetime
) -> tuple[int, Path]:
    """An ``all_history`` report written from ``COPY (all_history_sql) TO STDOUT`` in the
    session's transaction; returns (rows, path) as :func:`write_csv`."""
    start, end = parse_bound(report.params["from"], "from"), parse_bound(report.params["to"], "to")
    sheet = is_spreadsheet(report)
    separator, line_end = _dialect(report)
    total = _count_all(session, start, end, now)
    return _copy_lines(
        session,
        report,
        all_history_sql(sheet, separator, line_end),
        all_history_params(start, end, now),
        _header_line(report, SHEET_HISTORY_HEADER if sheet else HISTORY_HEADER),
        on_progress,
        total,
    )


def _copy_lines(
    session: DbSession,
    report: Report,
    select_lines: str,
    params: dict[str, Any],
    head: str,
    on_progress: Callable[[int, int], None],
    total: int,
    lines_before: int = 0,
) -> tuple[int, Path]:
    """Write ``head`` then the lines of ``COPY (select_lines) TO STDOUT`` (one text column, in
    the session's transaction) into the report's file, atomically; returns (rows, path), the
    rows not counting the first ``lines_before`` lines of the COPY (a header it writes)."""
    _, line_end = _dialect(report)
    query = "COPY (" + select_lines + ") TO STDOUT"
    path = report_path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    count = -lines_before
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with open(partial, "wb") as handle, raw.cursor() as cursor:
        handle.write(head.encode())
        with cursor.copy(query, params) as copy:
            rows = iter(copy)  # one row per message (the protocol's rule for COPY TO)
            told, every = time.monotonic(), _progress_seconds()
            while True:
                buffer = io.BytesIO()  # (each row copied at once: holding psycopg's row buffers costs)
                write = buffer.write
                for row in itertools.islice(rows, _COPY_BLOCK):
                    write(row)
                if not buffer.tell():
                    break
                count = _write_block(handle, buffer.getvalue(), line_end, count)
                if time.monotonic() - told >= every and count < total:
                    on_progress(count, total)  # (not at the end: the finished report's update says it)
                    told = time.monotonic()
    os.replace(partial, path)
    return count, path


def _write_block(handle: BinaryIO, data: bytes, line_end: str, count: int) -> int:
    """Write a block of COPY's text-format lines as the file's; returns the rows written so far."""
    done = count + data.count(b"\n")  # every raw \n ends a row (the text format escapes the others)
    if line_end != "\n":
        data = data.replace(b"\n", line_end.encode())
    if b"\\" in data:
        data = _ESCAPED.sub(lambda m: _UNESCAPE[m[1]], data)
    handle.write(data)
    return done


# -- member exports through COPY (issue 29) ------------------------------------------------------
#
# A segment's members now that are a list of users, by user id, each once: its live explicit
# rows (source explicit), then — a segment in rule mode — its rule match rows whose coverage
# nothing overrides, by the membership rule's SQL that decides which rule rows move an answer
# (``reads.rule.MATCH_VISIBLE``: no live explicit row of the segment, who are listed as explicit,
# no rollout exclusion, no live explicit row of another segment of its exclusion group). The
# lines are built as the Python writer built them (``neutralise`` and ``csv.writer``: the cells
# of ``all_history_sql``; a plain segment's file is byte for byte what that writer gave, which
# tests/services/test_member_exports.py holds against bytes the old code wrote), and the header
# is the COPY's first line, chosen by the segment's mode in the statement's snapshot: a file's
# columns and its rows agree even when the mode switches while it is written.
MEMBERS_SQL = f"""
SELECT m.user_id, m.added_at, m.expires_at, '{Source.EXPLICIT.value}' AS source
FROM memberships m
WHERE m.segment_id = %(segment)s AND (m.expires_at IS NULL OR m.expires_at > %(now)s)
UNION ALL
SELECT c.user_id, NULL, NULL, '{Source.RULE.value}'
FROM (SELECT r.user_id, r.segment_id, CAST(%(now)s AS timestamptz) AS at
      FROM rule_matches r WHERE r.segment_id = %(segment)s) c
JOIN segments s ON s.id = c.segment_id
WHERE {MATCH_VISIBLE}
"""
_RULE_MODE = "(SELECT rule_mode FROM segments WHERE id = %(segment)s)"


def members_sql(sheet: bool, separator: str, line_end: str) -> str:
    """The SELECT of a member export's lines (without their line end), its header first;
    psycopg parameters ``segment`` (id), ``slug``, ``now``, and the ``header`` of a plain
    segment's file and the ``rule_header`` of a rule mode segment's (:func:`members_params`)."""

    def cell(expr: str) -> str:
        return _sql_cell(expr, separator, line_end)

    def moment(expr: str) -> str:
        return f"coalesce({(SHEET_TIME_SQL if sheet else ISO_SQL).format(t=expr)}, '')"

    cells = [_sql_id("r.user_id"), cell("CAST(%(slug)s AS text)")]
    if sheet:  # source explicit, ttl (explicit, with an expiry) or rule
        cells += [
            f"(CASE WHEN r.source = '{Source.RULE.value}' THEN r.source "
            "WHEN r.expires_at IS NOT NULL THEN 'ttl' ELSE 'explicit' END)",
            moment("r.added_at"),
            moment("r.expires_at"),
        ]
    else:  # the four columns, then source in rule mode only
        cells += [
            moment("r.added_at"),
            moment("r.expires_at")
            + f" || (CASE WHEN {_RULE_MODE} THEN {_chr(separator)} || r.source ELSE '' END)",
        ]
    return (
        "SELECT x.line FROM (SELECT 0 AS k, CAST(NULL AS bigint) AS user_id, "
        f"(CASE WHEN {_RULE_MODE} THEN %(rule_header)s ELSE %(header)s END) AS line "
        f"UNION ALL SELECT 1, r.user_id, {f' || {_chr(separator)} || '.join(cells)} FROM ({MEMBERS_SQL}) r"
        ") x ORDER BY x.k, x.user_id"
    )


assert all(_plain(word) for word in (*Source, "ttl")), "a source the SQL writer would not quote"


def members_params(report: Report, segment: Segment, now: datetime) -> dict[str, Any]:
    _, line_end = _dialect(report)
    sheet = is_spreadsheet(report)
    header, rule_header = (
        (SHEET_MEMBERS_HEADER, SHEET_MEMBERS_HEADER) if sheet else (MEMBERS_HEADER, RULE_MEMBERS_HEADER)
    )
    return {
        "segment": segment.id,
        "slug": segment.slug,
        "now": now,
        "header": _header_line(report, header).removesuffix(line_end),
        "rule_header": _header_line(report, rule_header).removesuffix(line_end),
    }


def member_total(session: DbSession, segment: Segment, now: datetime) -> int:
    """How many rows a member export of ``segment`` writes at most (cheap: index counts): its
    live explicit members, and in rule mode its rule match rows (some may be overridden)."""
    total = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.segment_id == segment.id, Membership.live_at(now))
    )
    if segment.rule_mode:
        total = (total or 0) + (
            session.scalar(
                text("SELECT count(*) FROM rule_matches WHERE segment_id = :segment"), {"segment": segment.id}
            )
            or 0
        )
    return total or 0


def _copy_members(
    session: DbSession, report: Report, on_progress: Callable[[int, int], None], now: datetime
) -> tuple[int, Path]:
    """A ``segment_members`` report written from ``COPY (members_sql) TO STDOUT``; returns
    (rows, path) as :func:`write_csv`."""
    slug = report.params["segment"]
    segment = session.scalar(select(Segment).where(Segment.slug == slug, Segment.is_live))
    if segment is None:
        raise NotFound(f"segment {slug} was deleted")
    separator, line_end = _dialect(report)
    return _copy_lines(
        session,
        report,
        members_sql(is_spreadsheet(report), separator, line_end),
        members_params(report, segment, now),
        "",
        on_progress,
        member_total(session, segment, now),
        lines_before=1,
    )


def purge_old_reports(session: DbSession, now: datetime | None = None) -> int:
    """Delete reports (rows and files) older than REPORT_RETENTION_DAYS."""
    now = now or utcnow()
    cutoff = now - timedelta(days=current_app.config["REPORT_RETENTION_DAYS"])
    old = list(session.scalars(select(Report).where(Report.created_at < cutoff)))
    for report in old:
        report_path(report).unlink(missing_ok=True)
        session.delete(report)
    return len(old)


# -- the seed service's reports (GET /report, /download) ---------------------------------------
# For the seed-compatible API (webapp/api/compat.py).


SEED_MOMENT_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2})", re.ASCII)
SEED_DATE_HELP = "YYYY-MM-DD HH:MM (UTC), or a month YYYY-MM"
# A report is pending at most three attempts of an hour each (JOB_TIMEOUT, RETRY) plus its wait
# in the queue; one pending for longer is presumed lost and no longer shared.
SHARE_PENDING_FOR = timedelta(hours=4)
SEED_HEADER = {"user_id": "user", "timestamp": "date"}
SEED_OPERATIONS = {Action.ADDED.value: "added", Action.REMOVED.value: "deleted"}
TIME_COLUMNS = frozenset({"timestamp", "added_at", "expires_at"})


def parse_seed_moment(date: str) -> datetime:
    """``YYYY-MM-DD HH:MM`` (UTC, as the seed took it) -> an aware datetime; ValidationFailed otherwise."""
    match = SEED_MOMENT_RE.fullmatch(date)
    moment = None
    if match:
        year, month, day, hour, minute = (int(part) for part in match.groups())
        with contextlib.suppress(ValueError):  # 2023-02-30, 25:00 ...
            moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
    if moment is None or not 1970 <= moment.year <= 9998:
        raise ValidationFailed(
            f"date must be {SEED_DATE_HELP}",
            [detail("date", f"must be {SEED_DATE_HELP}", code="seed_date_invalid", value=date[:40])],
        )
    return moment


def request_seed_report(
    session: DbSession,
    date: str,
    *,
    user_id: int | None = None,
    requested_by: str = "",
    now: datetime | None = None,
) -> Report:
    """The seed's ``GET /report?date=``: history from ``date`` (``YYYY-MM-DD HH:MM``, UTC) until
    now, everyone's (``all_history``) or one user's; a month ``YYYY-MM`` is that month.

    An identical request still queued or running shares its report. "Identical" is the same
    kind, user, requester and ``date`` as given (kept in ``params["since"]``), not the computed
    ``to``, which differs for every request; for a month, the same params. The check and the
    insert run under a transaction-scoped advisory lock, so concurrent duplicates create one.
    A ``date`` after now gives an empty report (``to`` = ``from``).
    """
    now = now or utcnow()
    if not date:
        raise ValidationFailed(
            "date is required", [detail("date", f"required: {SEED_DATE_HELP}", code="required")]
        )
    kind = ReportKind.ALL_HISTORY if user_id is None else ReportKind.USER_HISTORY
    params: dict[str, Any]
    if PERIOD_RE.fullmatch(date):
        try:
            first, last = parse_period(date, None, None)
        except ValidationFailed:
            raise ValidationFailed(
                f"date must be {SEED_DATE_HELP}",
                [detail("date", f"must be {SEED_DATE_HELP}", code="seed_date_invalid", value=date)],
            ) from None
        params = {"from": iso(first), "to": iso(last), "period": date}
        identity = dict(params)
    else:
        since = parse_seed_moment(date)
        params = {"from": iso(since), "to": iso(max(since, now)), "since": date}
        identity = {"since": date}
    if user_id is not None:
        params["user_id"] = identity["user_id"] = check_user_id(user_id)
    return _queue_once(
        session, kind, params, requested_by, identity=identity, share_for=SHARE_PENDING_FOR, now=now
    )


def seed_time(value: str) -> str:
    """``2023-08-29T10:32:05.123Z`` -> ``2023-08-29 10:32:05`` (UTC); anything else stays as it is."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # empty (no expiry) or not a timestamp: as it is
        return value
    return (
        (moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        .astimezone(UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
    )


def seed_csv(handle: TextIO, rows_per_chunk: int = 1000) -> Iterator[bytes]:
    """A report file as the seed wrote its CSV, converted while streaming (constant memory).

    The file (``write_csv``): ``user_id;segment;operation;timestamp``, ``;``-separated,
    ``added``/``removed``, ISO 8601 with Z. The seed: ``user,segment,operation,date``,
    comma-separated, ``added``/``deleted``, ``YYYY-MM-DD HH:MM:SS`` UTC. Other kinds of report
    get the same treatment (comma, ``user``, timestamps in the seed's format).
    """
    reader = csv.reader(handle, delimiter=";")
    header = next(reader, None)
    if header is None:
        return
    times = [i for i, name in enumerate(header) if name in TIME_COLUMNS]
    operation = header.index("operation") if "operation" in header else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([SEED_HEADER.get(name, name) for name in header])
    for count, row in enumerate(reader, 1):
        for i in times:
            row[i] = seed_time(row[i])
        if operation is not None:
            row[operation] = SEED_OPERATIONS.get(row[operation], row[operation])
        writer.writerow(row)
        if count % rows_per_chunk == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


# -- signed download links (issue 27: a report.finished webhook carries one) --------------------

LINK_SALT = "report-download-link"


def _link_serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=LINK_SALT)


def signed_link_token(report: Report, secret_key: str) -> str:
    """A token naming the report, signed with the app's secret; it expires (see
    :func:`report_from_link`). Whoever holds it can download the file, nothing else."""
    return _link_serializer(secret_key).dumps(str(report.id))


def report_from_link(session: DbSession, token: str, secret_key: str, max_age: int) -> Report:
    """The finished report a signed link names; 404 ``link_invalid`` for a forged, altered or
    expired link (which of them is not told)."""
    try:
        report_id = _link_serializer(secret_key).loads(token, max_age=max_age)
    except (BadSignature, SignatureExpired):
        raise NotFound(
            "this download link is invalid or has expired",
            [detail("token", "invalid or expired link", code="link_invalid")],
        ) from None
    return get_report(session, str(report_id))
