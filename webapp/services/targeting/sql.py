"""Conditions as PostgreSQL boolean expressions over a jsonb column of traits (an object of
scalars), agreeing with ``evaluate`` (tests/services/test_targeting_sql.py proves it by
hypothesis against the real server).

Every expression is true or false, never NULL (a missing trait is false, a NULL column matches
nothing), so ``NOT expr`` is the exact complement. No expression can raise: a cast happens only
in a CASE branch whose test has checked the text it casts. Two kinds of condition are not exact
in SQL and give a superset instead (``exact=False``): ``case_insensitive`` string conditions
(PostgreSQL's lower() is not Unicode case folding, and depends on the database's locale), which
only check that the trait is a string; and version comparisons whose operand has a pre-release
tag (SemVer's identifier order needs a server-side function), which are exact on the release
numbers and loose where those are equal. Python (``RuleSet.match``) confirms those.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement

from webapp.rules import MAX_RULE_STRING
from webapp.services.targeting.model import Condition, Kind
from webapp.services.targeting.readings import (
    DAY_US,
    HOUR_US,
    MINUTE_US,
    MOMENT_PATTERN,
    SECOND_US,
    VERSION_PARTS,
    VERSION_PATTERN,
    moment_key,
    version_key,
)

Expr = ColumnElement[Any]


class SqlFilter(NamedTuple):
    """``where``: a boolean expression over the traits column; ``exact``: whether it selects
    exactly the users ``match`` selects (else it selects a superset: confirm each row in Python)."""

    where: ColumnElement[bool]
    exact: bool


def condition_sql(c: Condition, column: Expr) -> tuple[Expr, bool]:
    """(expression, exact) for one condition."""
    traits = sa.type_coerce(column, JSONB)
    key = c.trait
    kind = c.kind
    if kind is Kind.PRESENCE:
        has = traits.has_key(key)
        return sa.func.coalesce(has if c.operator == "is_set" else sa.not_(has), sa.false()), True
    if kind in (Kind.BOOLEAN,) or (c.operator in ("str_eq", "num_eq") and not c.case_insensitive):
        # containment: a jsonb scalar equals only one of its own type (numbers by value: 5 = 5.0)
        return sa.func.coalesce(traits.contains({key: c.value}), sa.false()), True
    value = traits[key]
    is_string = sa.func.jsonb_typeof(value) == "string"
    text = traits[key].astext
    if kind is Kind.NUMBER:
        assert isinstance(c.value, int | float) and not isinstance(c.value, bool)
        operand = sa.literal(
            Decimal(c.value) if type(c.value) is int else Decimal(repr(c.value)), sa.Numeric()
        )
        compared = _compare(c.operator, sa.cast(value, sa.Numeric()), operand)
        return _guarded(sa.func.jsonb_typeof(value) == "number", compared), True
    if c.case_insensitive:
        return sa.func.coalesce(is_string, sa.false()), False  # a superset: Python folds the case
    if kind is Kind.LIST:
        listed = text == sa.any_(sa.literal(list(c.values), ARRAY(sa.Text())))
        return _guarded(is_string, listed if c.operator == "str_in" else sa.not_(listed)), True
    if kind is Kind.STRING:
        assert isinstance(c.value, str)
        x = sa.literal(c.value, sa.Text())
        if c.operator == "str_contains":
            found = sa.func.strpos(text, x) > 0
        elif c.operator == "str_starts_with":
            found = sa.func.starts_with(text, x)
        else:
            found = sa.func.right(text, sa.func.char_length(x)) == x
        return _guarded(is_string, found), True
    assert isinstance(c.value, str)
    readable = sa.and_(is_string, sa.func.char_length(text) <= MAX_RULE_STRING)
    if kind is Kind.DATE:
        moment = moment_key(c.value)
        assert moment is not None
        return _moment_sql(text, readable, c.operator, moment), True
    return _version_sql(text, readable, c.operator, c.value)


def _guarded(test: Expr, then: Expr) -> Expr:
    """``then`` where ``test`` holds (and only evaluated there), else false; never NULL."""
    return sa.case((sa.func.coalesce(test, sa.false()), sa.func.coalesce(then, sa.false())), else_=sa.false())


def _compare(op: str, left: Expr, right: Expr) -> Expr:
    if op.endswith("_eq"):
        return left == right
    if op.endswith("_ne"):
        return left != right
    if op.endswith("_lte"):
        return left <= right
    if op.endswith("_gte"):
        return left >= right
    if op.endswith("_lt") or op == "date_before":
        return left < right
    assert op.endswith("_gt") or op == "date_after"
    return left > right


def _int(text: Expr, start: int, length: int) -> Expr:
    return sa.cast(sa.func.substr(text, start, length), sa.BigInteger())


def _big(n: int) -> Expr:
    return sa.literal(n, sa.BigInteger())


def _moment_sql(text: Expr, readable: Expr, op: str, x: int) -> Expr:
    """readings.moment_key in SQL: the grammar by regex, the calendar checked by arithmetic
    before make_date sees it, microseconds since the epoch compared as a bigint."""
    year, month, day = _int(text, 1, 4), _int(text, 6, 2), _int(text, 9, 2)
    timed = sa.func.char_length(text) > 10
    hour = sa.case((timed, _int(text, 12, 2)), else_=_big(0))
    minute = sa.case((timed, _int(text, 15, 2)), else_=_big(0))
    second = sa.case((sa.func.substr(text, 17, 1) == ":", _int(text, 18, 2)), else_=_big(0))
    fraction = sa.func.substring(text, r"\.([0-9]+)")  # the first group; NULL without one
    micro = sa.func.coalesce(
        sa.cast(sa.func.rpad(sa.func.left(fraction, 6), 6, "0"), sa.BigInteger()), _big(0)
    )
    offset = sa.case(
        (timed, sa.func.substring(text, r"([+-][0-9]{2}(?::?[0-9]{2})?)$")), else_=sa.null()
    )  # NULL for none and for Z
    off_hours = sa.func.coalesce(_int(offset, 2, 2), _big(0))
    off_minutes = sa.case(
        (sa.func.char_length(offset) > 3, sa.cast(sa.func.right(offset, 2), sa.BigInteger())), else_=_big(0)
    )
    leap = sa.or_(sa.and_(year % 4 == 0, year % 100 != 0), year % 400 == 0)
    month_days = sa.case(
        (month == 2, sa.case((leap, _big(29)), else_=_big(28))),
        (month.in_([4, 6, 9, 11]), _big(30)),
        else_=_big(31),
    )
    valid = sa.and_(
        year >= 1,
        month.between(1, 12),
        day >= 1,
        day <= month_days,
        hour <= 23,
        minute <= 59,
        second <= 59,
        off_hours <= 23,
        off_minutes <= 59,
    )
    days = sa.cast(
        sa.func.make_date(
            sa.cast(year, sa.Integer()), sa.cast(month, sa.Integer()), sa.cast(day, sa.Integer())
        )
        - sa.literal_column("DATE '1970-01-01'"),
        sa.BigInteger(),
    )
    shift = off_hours * _big(HOUR_US) + off_minutes * _big(MINUTE_US)
    signed_shift = sa.case((sa.func.left(offset, 1) == "+", -shift), else_=shift)
    key = (
        days * _big(DAY_US)
        + hour * _big(HOUR_US)
        + minute * _big(MINUTE_US)
        + second * _big(SECOND_US)
        + micro
        + signed_shift
    )
    compared = _compare(op, key, _big(x))
    checked = sa.case((valid, compared), else_=sa.false())
    return _guarded(sa.and_(readable, text.regexp_match(f"^{MOMENT_PATTERN}$")), checked)


def _version_sql(text: Expr, readable: Expr, op: str, operand: str) -> tuple[Expr, bool]:
    """readings.version_key in SQL, exact on (release numbers, release or pre-release); the
    pre-release identifiers are compared only in Python (the superset when they would matter)."""
    x = version_key(operand)
    assert x is not None
    x_release, x_is_release, _ = x
    core = sa.func.substring(text, r"^[0-9]+(?:\.[0-9]+){0,3}")
    dots = sa.func.char_length(core) - sa.func.char_length(sa.func.replace(core, ".", ""))
    padded = core.concat(sa.func.repeat(".0", VERSION_PARTS - 1 - dots))
    release = sa.cast(sa.func.string_to_array(padded, "."), ARRAY(sa.Numeric()))
    is_release = sa.not_(text.regexp_match(r"^[0-9.]+-"))
    x_core = sa.literal([Decimal(n) for n in x_release], ARRAY(sa.Numeric()))
    if x_is_release:
        compared = _compare(op, sa.tuple_(release, is_release), sa.tuple_(x_core, sa.true()))
        exact = True
    else:  # the operand is a pre-release: loose where the release numbers are equal
        same = release == x_core
        if op == "semver_eq":
            compared = sa.and_(same, sa.not_(is_release))
        elif op in ("semver_lt", "semver_lte"):
            compared = sa.or_(release < x_core, sa.and_(same, sa.not_(is_release)))
        else:
            compared = release >= x_core
        exact = False
    return _guarded(sa.and_(readable, text.regexp_match(f"^{VERSION_PATTERN}$")), compared), exact
