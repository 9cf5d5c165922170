"""Validation limits and formats: the one place both the API schemas and the services read them."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import NamedTuple

SLUG_PATTERN = r"[A-Z][A-Z0-9_]{0,63}"
SLUG_RE = re.compile(SLUG_PATTERN)  # always used with fullmatch: "SLUG\n" is not a slug
SLUG_HELP = "upper-case letters, digits and underscores, starting with a letter (at most 64)"
MAX_SLUG_INPUT = 200  # longer strings are refused before the slug rule is even checked

INT64_MAX = 2**63 - 1  # what every integer field holds (PostgreSQL bigint)
MAX_USER_ID = INT64_MAX  # users are external positive bigint ids
MAX_TTL_SECONDS = 10 * 366 * 24 * 3600  # ten years
MAX_TTL_DAYS = 3660
MAX_DESCRIPTION = 2000

MAX_ITEMS_PER_CHANGE = 1000  # add + del items in one per-user change
MAX_BULK_IDS = 1_000_000  # ids in one bulk add (API or dashboard upload)
MAX_LOOKUP_IDS = 1000  # users in one batch lookup
PERIOD_RE = re.compile(r"(\d{4})-(\d{2})")
# Read-your-writes (webapp/services/reads/replicas.py): a committed write's response header, and the
# header a read sends back to be served only by a server that has replayed that write.
CONSISTENCY_HEADER = "Segments-Consistency"


def bounded_int(text: str, high: int) -> int | None:
    """``text`` of ASCII digits only (leading zeros allowed) as an int when it is at most
    ``high``, else None. Every number a client sends in digits is read through here: its
    length is compared before ``int()``, which refuses more than 4,300 digits (a ValueError,
    so a 500 wherever a caller did not expect one) and takes quadratic time below that."""
    if not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    value = int(digits)
    return value if value <= high else None


def is_slug(value: object) -> bool:
    return isinstance(value, str) and SLUG_RE.fullmatch(value) is not None


# -- dates ---------------------------------------------------------------------------------
#
# The one rule for every date a client sends (API bodies and queries, the dashboard's forms):
# it is read as ISO 8601, naive means UTC where a field allows it, and it is converted to UTC at
# once, so nothing later meets an offset. A moment that is not in years 1..9999 once in UTC
# (0001-01-01T00:00:00+14:00 is in year 0) is refused here, with the field's name, never
# left to overflow later.


class Invalid(ValueError):
    """A ValueError that names its kind of problem (``code``: an error detail's stable code, see
    errors.detail); its text is the API's English words."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def problem_code(exc: Exception, default: str = "invalid") -> str:
    """The stable code of a ValueError raised by a rule (``Invalid``), else ``default``."""
    return getattr(exc, "code", default)


DATE_RANGE_PROBLEM = "must be between 0001-01-01 and 9999-12-31 in UTC"
NAIVE_PROBLEM = "must include a timezone (use Z for UTC)"
NOT_A_DATE_PROBLEM = "must be an ISO 8601 date or date-time, such as 2026-11-01T10:00:00Z"


def in_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; ValueError (a plain message) when it is naive or when UTC falls
    outside years 1..9999."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise Invalid("date_naive", NAIVE_PROBLEM)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Invalid("date_out_of_range", DATE_RANGE_PROBLEM) from None


def parse_moment(text: str, *, naive_is_utc: bool = True) -> datetime:
    """An ISO 8601 date (midnight) or date-time, ``Z`` for UTC, as an aware UTC datetime; a
    naive one is UTC unless ``naive_is_utc`` is false. ValueError (a plain message) otherwise."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, TypeError, OverflowError):
        raise Invalid("date_invalid", NOT_A_DATE_PROBLEM) from None
    if value.tzinfo is None and naive_is_utc:
        return value.replace(tzinfo=UTC)
    return in_utc(value)


# -- user traits (issue 29) ------------------------------------------------------------------
#
# The one place a trait is judged, whoever sends it (PUT/PATCH bodies, each line of an import).
# A user's traits are a JSON object of scalars: strings, numbers, booleans. ``null`` only in a
# merge (PATCH, an import in merge mode), where it deletes the key. Nested objects and arrays
# are refused. Every problem of every key is named, never only the first.

TRAIT_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
TRAIT_KEY_RE = re.compile(TRAIT_KEY_PATTERN)  # always with fullmatch
TRAIT_KEY_HELP = "letters, digits, _ . - (at most 64), starting with a letter or _"  # rules' trait keys too
MAX_TRAITS_PER_USER = 100  # keys a user may hold, and keys one PUT or PATCH may name
MAX_TRAIT_STRING = 256  # characters of a string value
# Numbers (integers or not) within ±(2^53 - 1): what every JSON reader (a double) holds exactly
# as an integer. A larger integer (9007199254740993) would come back as another number from some
# clients; NaN, ±Infinity (and 1e400, which reads as Infinity) are refused.
MAX_TRAIT_INTEGER = 2**53 - 1


class TraitProblem(NamedTuple):
    """One problem of a traits object: the key it is about (None: the object itself), its stable
    ``code`` and the API's English ``message``."""

    key: str | None
    code: str
    message: str


def trait_value_problem(value: object, *, merge: bool) -> tuple[str, str] | None:
    """(code, message) when ``value`` cannot be a trait's value, else None."""
    if value is None:
        return None if merge else ("trait_null", "null deletes a key only in a merge (PATCH)")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if math.isfinite(value) and -MAX_TRAIT_INTEGER <= value <= MAX_TRAIT_INTEGER:
            return None
        return (
            "trait_number_range",
            f"a number must be within ±{MAX_TRAIT_INTEGER:,} (2^53 - 1; no NaN or Infinity, 1e400 is Infinity)",
        )
    if isinstance(value, str):
        if len(value) > MAX_TRAIT_STRING:
            return ("trait_string_too_long", f"a string holds at most {MAX_TRAIT_STRING} characters")
        if "\x00" in value:
            return ("trait_string_nul", "a string cannot hold the NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ("trait_string_invalid", "a string must be valid Unicode (no lone surrogates)")
        return None
    if isinstance(value, dict | list):
        return ("trait_not_scalar", "a value must be a string, number or boolean (no objects or arrays)")
    return ("trait_type_invalid", "a value must be a string, number or boolean")


def trait_key_problem(key: str) -> tuple[str, str] | None:
    if TRAIT_KEY_RE.fullmatch(key) is None:
        return ("trait_key_invalid", f"a key is {TRAIT_KEY_HELP}")
    return None


_VALID_KEYS: set[str] = set()  # keys already found valid (an import repeats a few keys a million times)


def _valid_key(key: str) -> bool:
    if key in _VALID_KEYS:
        return True
    if TRAIT_KEY_RE.fullmatch(key) is None:
        return False
    if len(_VALID_KEYS) < 10_000:
        _VALID_KEYS.add(key)
    return True


def trait_problems(traits: object, *, merge: bool) -> list[TraitProblem]:
    """Every problem of a traits object as a client sent it (PUT: ``merge`` false; PATCH and
    an import's merge lines: true). Keys over MAX_TRAITS_PER_USER are one problem of the object;
    each bad key and each bad value is its own. (The common values are judged inline: an import
    judges a million objects in its request.)"""
    if not isinstance(traits, dict):
        return [TraitProblem(None, "traits_not_object", "traits must be a JSON object of key: value")]
    problems = []
    if len(traits) > MAX_TRAITS_PER_USER:
        problems.append(
            TraitProblem(None, "too_many_traits", f"at most {MAX_TRAITS_PER_USER} keys ({len(traits)} given)")
        )
    for key, value in traits.items():
        if not _valid_key(key):
            problems.append(TraitProblem(key, *trait_key_problem(key)))  # type: ignore[misc]
            continue
        kind = type(value)
        if kind is str:
            if len(value) <= MAX_TRAIT_STRING and value.isascii() and "\x00" not in value:
                continue
        elif kind is bool or (kind is int and -MAX_TRAIT_INTEGER <= value <= MAX_TRAIT_INTEGER):
            continue
        found = trait_value_problem(value, merge=merge)
        if found is not None:
            problems.append(TraitProblem(key, *found))
    return problems


# -- rules over traits (issue 29; the language: webapp/services/targeting) -------------------
# (trait keys: TRAIT_KEY_PATTERN above, one rule for the traits API and the rules)

MAX_RULES = 10  # rules in one segment (OR)
MAX_RULE_CONDITIONS = 20  # conditions in one rule (AND)
MAX_RULE_VALUES = 1000  # values in one list (str_in, str_not_in)
MAX_RULESET_VALUES = 10_000  # list values in all of a segment's rules together
MAX_RULE_STRING = 256  # characters in one string operand; versions and dates longer never parse
MAX_RULE_NUMBER = 10**309  # |number operand| below this (every finite float is)


def is_trait_key(value: object) -> bool:
    return isinstance(value, str) and TRAIT_KEY_RE.fullmatch(value) is not None
