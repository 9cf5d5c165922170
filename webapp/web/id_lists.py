"""User id lists pasted or uploaded on the dashboard: one pass, every problem named.

Rules (the bulk-add form states them):
- pasted text is ids only: separated by commas, semicolons, spaces or new lines; it never has
  a header line;
- a file's first line is a column header only when it holds no number at all (``user_id``,
  ``user_id,email,country``); the caller is told (``ParsedIds.header``) so the page can say so;
- a file whose header names several columns is read as CSV (the header's delimiter) and its
  ``user_id`` column is used;
- every token that is not a user id is reported with its line (up to ``MAX_REPORTED``, with
  the total counted), and then no id is returned at all: the caller adds all or nothing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from webapp.errors import Detail, ValidationFailed, detail
from webapp.rules import MAX_USER_ID, bounded_int

SEPARATORS = re.compile(r"[\s,;]+")
ONLY_DIGITS_AND_SEPARATORS = re.compile(r"[0-9\s,;]*")
LONG_NUMBER = re.compile(r"[0-9]{19}")
TO_SPACES = str.maketrans(",;", "  ")
NUMBER_LIKE = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
MAX_REPORTED = 1000
ID_COLUMNS = ("user_id", "userid", "user id", "user-id")


@dataclass
class ParsedIds:
    ids: list[int]
    source: str  # "pasted" or the file's name
    header: str | None = None  # a file's first line, read as its column header
    column: str | None = None  # the column used, for a file of several columns


@dataclass
class _Problems:
    field_name: str
    found: int = 0
    listed: list[Detail] = field(default_factory=list)

    def add(self, line: int, token: str, problem: str) -> None:
        self.found += 1
        if len(self.listed) < MAX_REPORTED:
            self.listed.append(
                detail(
                    self.field_name,
                    f"line {line}: {problem}",
                    code="id_token_invalid",
                    line=line,
                    token=token[:40],
                )
            )

    def take(self, ids: list[int], line: int, token: str) -> None:
        """``token``'s user id onto ``ids``, or its problem here."""
        value = user_id_of(token)
        if value is None:
            self.add(line, token, token_problem(token) or "")
        else:
            ids.append(value)


def token_problem(token: str) -> str | None:
    """Why ``token`` is not a user id, in plain words; None when it is one."""
    shown = token if len(token) <= 30 else token[:27] + "…"
    if token.isascii() and token.isdigit():
        value = bounded_int(token, MAX_USER_ID)  # (None: too large, whatever its length)
        if value == 0:
            return f"“{shown}”: user ids start at 1"
        if value is None:
            return f"“{shown}” is too large to be a user id"
        return None
    if NUMBER_LIKE.fullmatch(token):
        if token.startswith("-"):
            return f"“{shown}” is negative: user ids start at 1"
        if "." in token or "," in token:
            return f"“{shown}” is not a whole number"
        return f"“{shown}” has a sign: write the number alone"
    return f"“{shown}” is not a number"


def user_id_of(token: str) -> int | None:
    """``token`` as a user id (plain ASCII digits, 1 up to MAX_USER_ID), else None."""
    value = bounded_int(token, MAX_USER_ID)
    return value if value else None


def parse_pasted(text: str, limit: int, field_name: str = "user_ids") -> ParsedIds:
    """Ids typed or pasted into the form: no header, every token must be an id."""
    problems = _Problems(field_name)
    ids = _plain_ids(text, 1, limit, problems, field_name)
    if problems.found:
        first = problems.listed[0]
        if first["line"] == 1 and _looks_like_header(text.splitlines()[0]):
            first["message"] += " (pasted text has no header line: leave the column name out)"
    _raise_if_any(problems, limit)
    return ParsedIds(ids, "pasted")


def parse_file(stream: IO[bytes], name: str, limit: int, field_name: str = "file") -> ParsedIds:
    """An uploaded CSV or text file: optional header line, ids in its ``user_id`` column when
    it has several columns."""
    raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed(
            f"{name} is not a text file",
            [
                detail(
                    field_name,
                    f"{name} could not be read as text (UTF-8): save it as CSV or plain text",
                    code="file_not_text",
                )
            ],
        ) from None
    del raw  # a million ids are megabytes: hold one copy at a time
    visible = re.search(r"\S", text)
    if visible is None:
        raise ValidationFailed(
            f"{name} is empty", [detail(field_name, f"{name} is empty", code="file_empty")]
        )
    begin = text.rfind("\n", 0, visible.start()) + 1
    end = text.find("\n", visible.start())
    end = len(text) if end < 0 else end
    first, number = text[begin:end], text.count("\n", 0, begin) + 1  # the first line with something on it
    problems = _Problems(field_name)
    if not _looks_like_header(first):
        ids = _plain_ids(text, 1, limit, problems, field_name)
        _raise_if_any(problems, limit)
        return ParsedIds(ids, name)
    header, rest = first.strip(), text[end + 1 :]
    del text
    delimiter = next((d for d in (",", ";", "\t") if d in header), None)
    columns = [c.strip().strip("\"'").strip() for c in header.split(delimiter)] if delimiter else [header]
    if len(columns) == 1:
        ids = _plain_ids(rest, number + 1, limit, problems, field_name)
        column = None
    else:
        index = _id_column(columns, name, field_name)
        column = columns[index]
        ids = _column_ids(rest, number, delimiter or ",", index, column, limit, problems)
    _raise_if_any(problems, limit)
    if not ids:
        raise ValidationFailed(
            f"{name} has no user ids",
            [
                detail(
                    field_name,
                    f"{name} has a header line (“{_short(header)}”) and no user ids below it",
                    code="file_no_ids",
                )
            ],
        )
    return ParsedIds(ids, name, header=_short(header, 80), column=column)


def _looks_like_header(line: str) -> bool:
    """A line with no number in it (``user_id``, ``email,user_id``): what a header looks like."""
    return not any(NUMBER_LIKE.fullmatch(t.strip("\"'")) for t in SEPARATORS.split(line.strip()) if t)


def _plain_ids(text: str, first_number: int, limit: int, problems: _Problems, field_name: str) -> list[int]:
    """Ids separated by commas, semicolons, spaces or new lines; ``text`` starts at line
    ``first_number``. Plain digits (the common case) are parsed in C, a million in a few
    megabytes; anything else token by token, each problem with its line."""
    if ONLY_DIGITS_AND_SEPARATORS.fullmatch(text) and not LONG_NUMBER.search(text):
        parsed = np.fromstring(text.translate(TO_SPACES), dtype=np.int64, sep=" ")
        _check_limit(len(parsed), limit, field_name)
        if not len(parsed) or parsed.min() >= 1:
            ids: list[int] = parsed.tolist()
            return ids
    ids = []
    for number, line in enumerate(text.splitlines(), first_number):
        for token in SEPARATORS.split(line.strip()):
            token = token.strip("\"'")
            if token:
                problems.take(ids, number, token)
        _check_limit(len(ids), limit, field_name)
    return ids


def _id_column(columns: list[str], name: str, field_name: str) -> int:
    wanted = [i for i, c in enumerate(columns) if c.lower() in ID_COLUMNS]
    if not wanted:
        wanted = [i for i, c in enumerate(columns) if c.lower() == "id"]
    if len(wanted) != 1:
        listed = ", ".join(f"“{_short(c, 30)}”" for c in columns[:12])
        why = "none is called user_id" if not wanted else "more than one is called user_id"
        raise ValidationFailed(
            f"{name}: which column holds the user ids?",
            [
                detail(
                    field_name,
                    f"{name} has several columns ({listed}) and {why}: name the column of ids "
                    "user_id, or upload a file of ids only",
                    code="id_column_unclear",
                )
            ],
        )
    return wanted[0]


def _column_ids(
    text: str, offset: int, delimiter: str, index: int, column: str, limit: int, problems: _Problems
) -> list[int]:
    ids: list[int] = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for row in reader:
        cell = row[index].strip() if index < len(row) else ""
        if cell.isdigit() and cell.isascii() and len(cell) < 19 and cell[0] != "0":  # the common case
            ids.append(int(cell))
            continue
        number = offset + reader.line_num
        if not any(c.strip() for c in row):
            continue
        if not cell:
            problems.add(number, "", f"no value in the {column} column")
            continue
        problems.take(ids, number, cell)
    _check_limit(len(ids), limit, problems.field_name)
    return ids


def _check_limit(count: int, limit: int, field_name: str) -> None:
    if count > limit:
        raise ValidationFailed(
            f"more than {limit:,} ids",
            [
                detail(
                    field_name,
                    f"more than {limit:,} ids: split the list and add it in parts",
                    code="too_many_ids",
                    max=limit,
                )
            ],
        )


def _raise_if_any(problems: _Problems, limit: int) -> None:
    if problems.found:
        more = f" (the first {MAX_REPORTED:,} are listed)" if problems.found > MAX_REPORTED else ""
        what = "entry is not a user id" if problems.found == 1 else "entries are not user ids"
        raise ValidationFailed(f"{problems.found:,} {what}{more}", problems.listed)


def _short(text: str, size: int = 60) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
