"""How the rule language reads a string as a version, a moment or a case-folded string (pure).

Each reading is one grammar, used alike for a condition's operand (parse time: a bad operand is a
validation error) and for a trait's value (match time: a value that does not read does not
match); ``sql.py`` mirrors the same grammars in PostgreSQL, so both sides agree exactly. The
grammars are stricter than Python's ``fromisoformat`` on purpose: what PostgreSQL must re-check
has to be small enough to spell out. docs/design.md, "Rules over traits: the language".
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

from webapp.rules import MAX_RULE_STRING

# -- versions ------------------------------------------------------------------------------
#
# Dotted numbers (1 to 4 parts, missing parts read as 0: 5.2 == 5.2.0 == 5.2.0.0), then an
# optional SemVer pre-release (-alpha.1) and optional build metadata (+build.5, ignored).
# Numbers are read as integers (leading zeros allowed: 05 == 5), in the pre-release too.
VERSION_PARTS = 4
VERSION_PATTERN = (
    r"([0-9]+(?:\.[0-9]+){0,3})"  # the release: 1 to 4 dotted numbers
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"  # the pre-release identifiers
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"  # build metadata: read, ignored
)
_VERSION_RE = re.compile(VERSION_PATTERN)

# A version's order key: (release padded to 4 numbers, 1 for a release / 0 for a pre-release,
# pre-release identifiers as (0, number) or (1, text)). Tuples compare as SemVer 2.0 orders
# (item 11): numbers numerically, identifiers with letters in ASCII order, a numeric identifier
# below one with letters, a longer list of identifiers above its prefix, a release above its
# pre-releases.
PreId = tuple[int, int] | tuple[int, str]
VersionKey = tuple[tuple[int, ...], int, tuple[PreId, ...]]


def version_key(text: str) -> VersionKey | None:
    """``text`` as a version's order key, or None when it is not a version (also when it is
    longer than MAX_RULE_STRING: then neither side reads it, and the cache holds no long keys)."""
    return None if len(text) > MAX_RULE_STRING else _version_key(text)


@lru_cache(maxsize=8192)  # few distinct versions among many users: a trait's app_version repeats
def _version_key(text: str) -> VersionKey | None:
    found = _VERSION_RE.fullmatch(text)
    if found is None:
        return None
    parts = tuple(int(p) for p in found.group(1).split("."))
    release = parts + (0,) * (VERSION_PARTS - len(parts))
    pre = found.group(2)
    if pre is None:
        return release, 1, ()
    ids: list[PreId] = [(0, int(i)) if i.isdigit() else (1, i) for i in pre.split(".")]
    return release, 0, tuple(ids)


# -- moments -------------------------------------------------------------------------------
#
# An ISO 8601 date (YYYY-MM-DD: midnight UTC) or date-time YYYY-MM-DD[T|t| ]HH:MM[:SS[.fraction]]
# with an optional offset Z, z, ±HH:MM, ±HHMM or ±HH; without an offset a date-time is UTC. The
# fraction is cut (not rounded) to microseconds. Years 0001-9999, real calendar days (Feb 29 in
# leap years only), hours 00-23, minutes and seconds 00-59 (no leap second), offsets up to ±23:59.
# A moment is compared as microseconds since 1970-01-01 UTC, so an offset may carry it a little
# outside years 1-9999 (0001-01-01T00:00+01:00 is 1 BC in UTC) and it still compares.
MOMENT_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
_MOMENT_RE = re.compile(MOMENT_PATTERN)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
SECOND_US = 1_000_000


def moment_key(text: str) -> int | None:
    """``text`` as microseconds since 1970-01-01T00:00:00Z, or None when it is not a moment
    (also when it is longer than MAX_RULE_STRING)."""
    return None if len(text) > MAX_RULE_STRING else _moment_key(text)


@lru_cache(maxsize=8192)
def _moment_key(text: str) -> int | None:
    found = _MOMENT_RE.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:  # year 0000, month 13, Feb 30, Feb 29 of a common year
        return None
    h = int(hour) if hour else 0
    m = int(minute) if minute else 0
    s = int(second) if second else 0
    if h > 23 or m > 59 or s > 59:
        return None
    key = days * DAY_US + h * HOUR_US + m * MINUTE_US + s * SECOND_US
    if fraction:
        key += int(fraction[:6].ljust(6, "0"))
    if offset and offset not in "Zz":
        oh, om = int(offset[1:3]), int(offset[-2:]) if len(offset) > 3 else 0
        if oh > 23 or om > 59:
            return None
        shift = oh * HOUR_US + om * MINUTE_US
        key += -shift if offset[0] == "+" else shift
    return key


# -- case ----------------------------------------------------------------------------------


def fold(text: str) -> str:
    """A string as ``case_insensitive`` conditions compare it: Unicode full case folding
    (Python's ``str.casefold``: "Straße" and "STRASSE" are equal, so are "Москва" and
    "МОСКВА"); no other normalisation (composed and decomposed é differ)."""
    return text.casefold()
