"""Conditions compiled once into closures over pre-read operands (pure, fast: the re-evaluation
of a segment runs them for every user with traits).

Numbers: a number is the decimal it is written as in JSON, as PostgreSQL's jsonb keeps it (the
decimal of a float is its shortest repr, what ``json.dumps`` writes). Python compares int and
float exactly by their binary values, which is the same answer unless a float of magnitude 2**53
or more meets an int (1e23 is 99999999999999991611392 in binary, 10**23 as written): then the
comparison goes through ``Decimal`` (rare, so the common case stays a plain comparison).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from webapp.services.targeting.model import Condition, Kind, Trait
from webapp.services.targeting.readings import fold, moment_key, version_key

Test = Callable[[Mapping[str, Trait]], bool]
Compare = Callable[[Any, Any], bool]

COMPARE: dict[str, Compare] = {
    "num_eq": operator.eq,
    "num_ne": operator.ne,
    "num_lt": operator.lt,
    "num_lte": operator.le,
    "num_gt": operator.gt,
    "num_gte": operator.ge,
    "semver_eq": operator.eq,
    "semver_lt": operator.lt,
    "semver_lte": operator.le,
    "semver_gt": operator.gt,
    "semver_gte": operator.ge,
    "date_before": operator.lt,
    "date_after": operator.gt,
}
_EXACT = 2**53  # below it in magnitude, a float and an int compare as their decimals do


def compile_condition(c: Condition) -> Test:
    kind = c.kind
    key = c.trait
    if kind is Kind.PRESENCE:
        return _present(key) if c.operator == "is_set" else _absent(key)
    if kind is Kind.BOOLEAN:
        return _is(key, c.value)
    if kind is Kind.NUMBER:
        assert isinstance(c.value, int | float) and not isinstance(c.value, bool)
        return _number(key, COMPARE[c.operator], c.value)
    if kind is Kind.DATE:
        assert isinstance(c.value, str)
        moment = moment_key(c.value)
        assert moment is not None
        return _read(key, moment_key, COMPARE[c.operator], moment)
    if kind is Kind.VERSION:
        assert isinstance(c.value, str)
        version = version_key(c.value)
        assert version is not None
        return _read(key, version_key, COMPARE[c.operator], version)
    if kind is Kind.LIST:
        return _listed(key, c.values, c.case_insensitive, inside=c.operator == "str_in")
    assert isinstance(c.value, str)
    return _string(key, c.operator, c.value, c.case_insensitive)


def _present(key: str) -> Test:
    def test(t: Mapping[str, Trait]) -> bool:
        return key in t

    return test


def _absent(key: str) -> Test:
    def test(t: Mapping[str, Trait]) -> bool:
        return key not in t

    return test


def _is(key: str, wanted: Trait | None) -> Test:
    def test(t: Mapping[str, Trait]) -> bool:
        return t.get(key) is wanted  # True and False are singletons; 1 is not True

    return test


def _number(key: str, compare: Compare, x: int | float) -> Test:
    x_int = type(x) is int
    exact_x = Decimal(x) if x_int else Decimal(repr(x))
    x_small = -_EXACT < x < _EXACT

    def test(t: Mapping[str, Trait]) -> bool:
        v = t.get(key)
        tv = type(v)
        if tv is int:
            if x_int or x_small:
                return compare(v, x)
            return compare(Decimal(v), exact_x)  # type: ignore[arg-type]
        if tv is float:
            if v - v != 0.0:  # type: ignore[operator]  # inf or nan: not a JSON number
                return False
            if not x_int or -_EXACT < v < _EXACT:  # type: ignore[operator]
                return compare(v, x)
            return compare(Decimal(repr(v)), exact_x)
        return False  # a string, a boolean, missing

    return test


def _read(key: str, reading: Callable[[str], Any], compare: Compare, x: object) -> Test:
    """A string trait read by ``reading`` (a date's or a version's key; None: does not parse,
    so no match), compared with the operand ``x`` read the same way."""

    def test(t: Mapping[str, Trait]) -> bool:
        v = t.get(key)
        if not isinstance(v, str):
            return False
        read = reading(v)
        return read is not None and compare(read, x)

    return test


def _listed(key: str, values: tuple[str, ...], case_insensitive: bool, *, inside: bool) -> Test:
    if case_insensitive:
        folded = frozenset(fold(v) for v in values)
        if inside:

            def test(t: Mapping[str, Trait]) -> bool:
                v = t.get(key)
                return isinstance(v, str) and v.casefold() in folded

        else:

            def test(t: Mapping[str, Trait]) -> bool:
                v = t.get(key)
                return isinstance(v, str) and v.casefold() not in folded

        return test
    wanted = frozenset(values)
    if inside:

        def test(t: Mapping[str, Trait]) -> bool:
            return t.get(key) in wanted  # only strings are in it: 5 is not "5", True is not "True"

    else:

        def test(t: Mapping[str, Trait]) -> bool:
            v = t.get(key)
            return isinstance(v, str) and v not in wanted

    return test


def _string(key: str, op: str, x: str, case_insensitive: bool) -> Test:
    if case_insensitive:
        x = fold(x)
    if op == "str_eq":
        if case_insensitive:

            def test(t: Mapping[str, Trait]) -> bool:
                v = t.get(key)
                return isinstance(v, str) and v.casefold() == x

        else:

            def test(t: Mapping[str, Trait]) -> bool:
                return t.get(key) == x  # a string equals only a string

        return test
    method = {
        "str_contains": str.__contains__,
        "str_starts_with": str.startswith,
        "str_ends_with": str.endswith,
    }[op]
    if case_insensitive:

        def test(t: Mapping[str, Trait]) -> bool:
            v = t.get(key)
            return isinstance(v, str) and method(v.casefold(), x)

    else:

        def test(t: Mapping[str, Trait]) -> bool:
            v = t.get(key)
            return isinstance(v, str) and method(v, x)

    return test
