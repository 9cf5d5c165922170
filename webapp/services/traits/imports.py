"""Trait imports: up to MAX_BULK_IDS users' traits from an uploaded file, as a background
operation (a ``BulkOperation`` of kind ``trait_import``, run by the bulk operations' job).

**Formats.** JSON lines (``application/x-ndjson``): one object per line,
``{"user_id": 1, "traits": {...}}``, blank lines ignored. CSV (``text/csv``, UTF-8, RFC 4180
quoting): a header ``user_id,<key>,...`` then one row per user. A CSV cell is a string unless its
column says otherwise in the header: ``age:number`` (a JSON number: ``31``, ``-2.5``, ``1e3``),
``beta:boolean`` (``true`` or ``false``), ``plan:string`` (the default). An empty cell means the
key is not in that user's line: absent from the user's traits when the line replaces them, left
as it is when it merges (so a CSV cannot delete a key in a merge: JSON lines with ``null`` can).

**Validated whole, up front.** The file is read once in the request: every line is checked
(webapp.rules.trait_problems, the user id, each user listed once, at most MAX_BULK_IDS users) and
COPYed into ``bulk_operation_ids`` as it goes, in the request's transaction. Any problem refuses
the whole file (422, nothing stored, no operation): the first MAX_DETAILS problems named by line,
the message counting them all. Otherwise the operation is queued and answered (202).

**Applied in chunks** of CHUNK users in ascending id order, each its own transaction through
``traits.store.write`` (the users' locks, history, the stage-2 hook), the cursor (the last user
id done) and counts committed with the chunk: after a crash (``kill -9`` of the worker) the job
resumes after the cursor, and a chunk is idempotent (writing a line again changes nothing), so
the result is exact. Counts: ``added`` users who had no traits, ``updated`` users whose traits
changed, ``skipped`` merge lines left out because the user would hold more than
MAX_TRAITS_PER_USER keys (the user's traits changed since the file was checked).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import psycopg
from sqlalchemy import text

from webapp.errors import Detail, ValidationFailed, detail
from webapp.models import BulkOperation
from webapp.models.enums import OperationKind, Reason, ReportStatus, TraitImportMode
from webapp.rules import (
    MAX_BULK_IDS,
    MAX_TRAIT_INTEGER,
    MAX_TRAITS_PER_USER,
    bounded_int,
    trait_key_problem,
    trait_problems,
)
from webapp.services.common import DbSession, user_id_problem, utcnow
from webapp.services.membership import bulk
from webapp.services.traits import store

JSON_LINES, CSV = "application/x-ndjson", "text/csv"
FORMATS = (JSON_LINES, CSV)
CHUNK = 1_000  # users per transaction of an import (each holds one advisory lock per user)
MAX_LINE_BYTES = 256 * 1024  # a JSON line (100 keys of 256 characters fit several times over)
MAX_DETAILS = 100  # problems named in the refusal (all are counted)
COPY_BATCH = 20_000  # rows per write to the COPY stream
CSV_TYPES = ("string", "number", "boolean")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class _Problems:
    """The problems found so far: every one counted, the first MAX_DETAILS kept."""

    def __init__(self) -> None:
        self.details: list[Detail] = []
        self.count = 0
        self.lines: set[int] = set()

    def add(self, line: int, field: str, message: str, code: str, **params: object) -> None:
        self.count += 1
        self.lines.add(line)
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail(f"line {line}{field}", message, code=code, line=line, **params))


@dataclass
class _Line:
    number: int
    user_id: int
    traits: dict[str, Any]


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f'the key "{key[:60]}" is given twice')
            seen.add(key)
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_no_constant)


def _json_lines(file: IO[bytes], merge: bool, problems: _Problems) -> Iterator[_Line]:
    number = 0
    while raw := file.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            problems.add(number, "", f"a line holds at most {MAX_LINE_BYTES:,} bytes", "line_too_long")
            while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # (the rest of that line)
            continue
        if not raw.strip():
            continue
        try:
            item = _DECODER.decode(raw.decode())
        except (ValueError, RecursionError) as exc:
            reason = str(exc) if "twice" in str(exc) else "not a JSON object"
            problems.add(number, "", f"{reason}", "line_not_json")
            continue
        if type(item) is not dict or len(item) != 2 or "user_id" not in item or "traits" not in item:
            problems.add(
                number, "", 'each line is {"user_id": <id>, "traits": {...}} and nothing else', "line_shape"
            )
            continue
        user_id = item["user_id"]
        if (problem := user_id_problem(user_id)) is not None:
            problems.add(number, ".user_id", problem.message, problem.code, value=str(user_id)[:40])
            continue
        found = trait_problems(item["traits"], merge=merge)
        for p in found:
            where = ".traits" if p.key is None else f".traits.{p.key[:80]}"
            problems.add(number, where, p.message, p.code, **({} if p.key is None else {"key": p.key[:80]}))
        if not found:
            yield _Line(number, user_id, item["traits"])


def _csv_number(cell: str) -> int | float | None:
    if not _JSON_NUMBER.fullmatch(cell) or len(cell) > 40:
        return None
    value: int | float = int(cell) if cell.lstrip("-").isdigit() else float(cell)
    return value if math.isfinite(value) and abs(value) <= MAX_TRAIT_INTEGER else None


def _csv_lines(file: IO[bytes], merge: bool, problems: _Problems) -> Iterator[_Line]:
    reader = csv.reader(io.TextIOWrapper(file, encoding="utf-8-sig", newline=""), strict=True)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.add(1, "", f"the header cannot be read: {str(exc)[:100]}", "csv_invalid")
        return
    if not header or header[0] != "user_id":
        problems.add(1, "", "the header starts with user_id, then one column per trait key", "csv_header")
        return
    columns: list[tuple[str, str]] = []
    for i, name in enumerate(header[1:], start=2):
        key, _, kind = name.partition(":")
        kind = kind or "string"
        if (bad_key := trait_key_problem(key)) is not None:
            problems.add(1, f".column {i}", bad_key[1], bad_key[0], key=key[:80])
        elif kind not in CSV_TYPES:
            problems.add(
                1, f".column {i}", "a column's type is string, number or boolean", "csv_type", key=key
            )
        elif key in dict(columns):
            problems.add(1, f".column {i}", "a key is given twice in the header", "csv_key_twice", key=key)
        columns.append((key, kind))
    if len(columns) > MAX_TRAITS_PER_USER:
        problems.add(1, "", f"at most {MAX_TRAITS_PER_USER} trait columns", "too_many_traits")
    if problems.count:
        return
    width = len(header)
    while True:
        try:
            row = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            problems.add(reader.line_num + 1, "", f"this row cannot be read: {str(exc)[:100]}", "csv_invalid")
            return
        if row is None:
            return
        number = reader.line_num
        if not row or row == [""]:
            continue
        if len(row) != width:
            problems.add(number, "", f"{len(row)} cells, the header has {width}", "csv_width")
            continue
        user_id = bounded_int(row[0], 2**63 - 1)
        problem = user_id_problem(user_id if user_id is not None else row[0])
        if problem is not None or user_id is None:
            code, message = (problem.code, problem.message) if problem else ("user_id_invalid", "user id")
            problems.add(number, ".user_id", message, code, value=row[0][:40])
            continue
        traits: dict[str, Any] = {}
        bad = False
        for (key, kind), cell in zip(columns, row[1:], strict=True):
            if cell == "":
                continue
            value: Any = cell
            if kind == "number":
                value = _csv_number(cell)
            elif kind == "boolean":
                value = {"true": True, "false": False}.get(cell)
            if value is None:
                problems.add(
                    number, f".{key}", f"not a {kind} (column {key}:{kind})", f"csv_not_{kind}", key=key
                )
                bad = True
                continue
            traits[key] = value
        found = trait_problems(traits, merge=merge)
        for p in found:
            problems.add(number, f".{p.key or ''}", p.message, p.code, **({"key": p.key} if p.key else {}))
        if not bad and not found:
            yield _Line(number, user_id, traits)


def _escape(value: str) -> str:
    """COPY's text format: a backslash is an escape (the JSON text has no raw tab or newline)."""
    return value.replace("\\", "\\\\")


def start_import(
    session: DbSession,
    file: IO[bytes],
    content_type: str,
    mode: TraitImportMode,
    *,
    actor: str,
    reason: Reason = Reason.API,
) -> BulkOperation:
    """Check the whole file and store its lines for an operation, queued after the commit; or
    ValidationFailed naming the problems (nothing stored: the caller's transaction rolls back)."""
    if content_type not in FORMATS:
        raise ValidationFailed(
            "the file is JSON lines or CSV",
            [detail("Content-Type", f"one of {', '.join(FORMATS)}", code="file_type_invalid")],
        )
    merge = mode == TraitImportMode.MERGE
    problems = _Problems()
    lines = (_json_lines if content_type == JSON_LINES else _csv_lines)(file, merge, problems)
    operation_id = uuid.uuid4()
    ids, numbers = array("q"), array("q")

    def listed(line: _Line) -> bool:
        """Count the line's user (False past MAX_BULK_IDS: the file is refused)."""
        if len(ids) >= MAX_BULK_IDS:
            problems.add(line.number, "", f"at most {MAX_BULK_IDS:,} users per import", "too_many_lines")
            return False
        ids.append(line.user_id)
        numbers.append(line.number)
        return True

    clash: psycopg.errors.UniqueViolation | None = None
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy("COPY bulk_operation_ids (operation_id, user_id, traits) FROM STDIN") as copy:
            prefix, batch = f"{operation_id}\t", []
            for line in lines:
                if not listed(line):
                    break
                if problems.count:
                    continue  # (still checked, no longer stored: the file is refused)
                batch.append(f"{prefix}{line.user_id}\t{_escape(store.dump(line.traits))}\n")
                if len(batch) >= COPY_BATCH:
                    copy.write("".join(batch))
                    batch = []
            if batch and not problems.count:
                copy.write("".join(batch))
    except psycopg.errors.UniqueViolation as error:
        clash = error
        # A user listed twice (the operation's id is new): _repeated names every such line. The
        # transaction is spoilt, which is no loss: the file is refused and it is rolled back.
        for line in lines:  # (the rest of the file, checked all the same)
            if not listed(line):
                break
    _repeated(ids, numbers, problems)
    if clash is not None and not problems.count:
        raise clash  # (cannot happen: the operation's id is new, so only a repeated user clashes)
    if not ids and not problems.count:
        problems.add(1, "", "the file holds no user", "file_empty")
    if problems.count:
        shown = f", the first {MAX_DETAILS} listed" if problems.count > MAX_DETAILS else ""
        raise ValidationFailed(
            f"the file was not imported: {problems.count:,} problem{'s' if problems.count > 1 else ''} "
            f"in {len(problems.lines):,} line{'s' if len(problems.lines) > 1 else ''}{shown}",
            problems.details,
        )
    operation = BulkOperation(
        id=operation_id,
        kind=OperationKind.TRAIT_IMPORT,
        segment_id=None,
        slug="",
        mode=mode,
        status=ReportStatus.QUEUED,
        total=len(ids),
        done=0,
        added=0,
        updated=0,
        removed=0,
        skipped=0,
        cursor=0,
        phase=0,
        reason=reason,
        actor=actor,
        attempts=0,
        created_at=utcnow(),
    )
    session.add(operation)
    session.flush()
    bulk.enqueue_operation(operation)
    return operation


def _repeated(ids: array[int], numbers: array[int], problems: _Problems) -> None:
    """Each user once per file: every later line of a user listed before is a problem."""
    if len(ids) < 2:
        return
    values = np.frombuffer(ids, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    again = np.nonzero(ordered[1:] == ordered[:-1])[0]
    if not len(again):
        return
    lines = np.frombuffer(numbers, dtype=np.int64)
    firsts: dict[int, int] = {}
    for i in again.tolist():
        user = int(ordered[i + 1])
        first = firsts.setdefault(user, int(lines[order[i]]))
        problems.add(
            int(lines[order[i + 1]]),
            ".user_id",
            f"user {user} is listed twice (first on line {first})",
            "user_id_repeated",
            user_id=user,
            first_line=first,
        )


def run_chunk(session: DbSession, operation: BulkOperation) -> bool:
    """Apply the import's next CHUNK users in the caller's transaction (``traits.store.write``);
    False when none is left. Its cursor and counts change with the chunk (a crash loses nothing,
    and a chunk done again changes nothing)."""
    rows = session.execute(
        text(
            "SELECT user_id, traits FROM bulk_operation_ids WHERE operation_id = :op AND user_id > :cursor "
            "ORDER BY user_id LIMIT :chunk"
        ),
        {"op": operation.id, "cursor": operation.cursor, "chunk": CHUNK},
    ).all()
    if not rows:
        return False
    mode = TraitImportMode(operation.mode or TraitImportMode.REPLACE)
    result = store.write(
        session,
        [store.TraitWrite(user, traits or {}, mode) for user, traits in rows],
        actor=operation.actor,
        operation_id=operation.id,
    )
    operation.added += result.created
    operation.updated += len(result.changed) - result.created
    operation.skipped += len(result.too_many)
    operation.done += len(rows)
    operation.cursor = rows[-1][0]
    return len(rows) == CHUNK


def finish(session: DbSession, operation: BulkOperation) -> None:
    """Mark the import finished and drop its stored lines, in the same transaction."""
    operation.status, operation.finished_at = ReportStatus.FINISHED, utcnow()
    session.execute(text("DELETE FROM bulk_operation_ids WHERE operation_id = :op"), {"op": operation.id})
