"""RuleSet.sql agrees with RuleSet.match on the real PostgreSQL: the operator table, then random
rule sets over random traits (hypothesis). A temporary table with a jsonb column holds the
traits as json.dumps writes them (as the traits API stores them); exact filters select exactly
the users match selects, inexact ones a superset. Python's answer is also the same for the
traits as stored and as read back (1e308 comes back as an integer: the same decimal)."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_targeting import CASES, MISSING, case_id, case_traits, condition
from webapp.services.targeting import OPERATORS, RuleSet, parse
from webapp.services.targeting.readings import moment_key, version_key

TRAITS = sa.table("rule_traits", sa.column("id"), sa.column("traits"))


@pytest.fixture
def traits_table(db_session):
    db_session.execute(
        sa.text("CREATE TEMP TABLE IF NOT EXISTS rule_traits (id int PRIMARY KEY, traits jsonb NOT NULL)")
    )
    return db_session


def load(session, rows: list[dict]) -> None:
    session.execute(sa.text("DELETE FROM rule_traits"))
    if rows:
        session.execute(
            sa.text("INSERT INTO rule_traits VALUES (:id, CAST(:traits AS jsonb))"),
            [{"id": i, "traits": json.dumps(t)} for i, t in enumerate(rows)],
        )


def check(session, rules: RuleSet, rows: list[dict]) -> None:
    found = rules.sql(TRAITS.c.traits)
    answers = session.execute(
        sa.select(TRAITS.c.id, TRAITS.c.traits, found.where).order_by(TRAITS.c.id)
    ).all()
    assert len(answers) == len(rows)
    for row_id, stored, in_sql in answers:
        expected = rules.match(rows[row_id]) is not None
        assert (rules.match(stored) is not None) is expected, (rows[row_id], stored, rules)
        assert in_sql is not None, "never NULL"
        if found.exact:
            assert in_sql is expected, (rows[row_id], rules)
        elif expected:
            assert in_sql, ("a superset", rows[row_id], rules)
    negated = session.execute(
        sa.select(sa.func.count()).select_from(TRAITS).where(sa.not_(found.where))
    ).scalar()
    assert negated == sum(1 for *_, in_sql in answers if not in_sql)  # NOT is the exact complement


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_operator_table_in_sql(traits_table, case: tuple) -> None:
    op, operand, value, expected = case[:4]
    rules = parse([{"conditions": [condition(op, operand, len(case) > 4)]}])
    rows = [case_traits(value), {}]
    load(traits_table, rows)
    check(traits_table, rules, rows)
    if value is not MISSING and expected:
        assert (
            traits_table.execute(
                sa.select(sa.func.count()).select_from(TRAITS).where(rules.sql(TRAITS.c.traits).where)
            ).scalar()
            >= 1
        )


def test_no_rules_and_null_traits(traits_table) -> None:
    traits_table.execute(sa.text("CREATE TEMP TABLE nullable_traits (traits jsonb)"))
    traits_table.execute(sa.text("INSERT INTO nullable_traits VALUES (NULL), ('{}')"))
    column = sa.column("traits")
    for raw in ([], [{"conditions": [{"trait": "a", "operator": "not_set"}]}]):
        found = parse(raw).sql(column)
        got = (
            traits_table.execute(sa.select(found.where).select_from(sa.table("nullable_traits")))
            .scalars()
            .all()
        )
        assert None not in got
    assert (
        traits_table.execute(
            sa.select(sa.func.count())
            .select_from(sa.table("nullable_traits"))
            .where(parse([]).sql(column).where)
        ).scalar()
        == 0
    )


# -- hypothesis: random rule sets over random traits --------------------------------------

KEYS = ["a", "b", "c"]
VERSIONS = ["5.2", "5.2.0", "5.10", "5.02", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
            "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.0+build.7", "1.0.0-rc.1+b", "1", "0.0.1",
            "18446744073709551616.0", "1.2.3.4"]  # fmt: skip
NOT_VERSIONS = ["v1", "1.2.3.4.5", "1..2", "1.0.0-", "1.0.0+", "abc", "-1", "1.0.0-a..b"]
DATES = ["2024-02-29", "2026-01-01T00:00:00Z", "2026-01-01T03:00:00+03:00", "2025-12-31T21:00:00-00:00",
         "2026-01-01 00:00", "2025-12-31T23:59:59.9999999z", "0001-01-01T00:00+01:00", "9999-12-31T23:59:59-23:59",
         "2026-01-01T10:00+0530", "2026-01-01T10:00+05", "1970-01-01"]  # fmt: skip
NOT_DATES = ["2023-02-29", "1900-02-29", "2026-13-01", "2026-00-10", "2026-01-01T24:00", "2026-01-01T23:59:60",
             "0000-01-01", "2026-01-01T10:00+24:00", "2026-01-01T10:60", "2026-04-31", "2026-06-31", "2026-09-31", "2026-11-31", "2026-01-01Z", "20260101"]  # fmt: skip
NUMBERS = [0, -0.0, 0.0, 1, -1, 5, 5.0, 0.1, 0.1 + 0.2, 0.3, 1e308, -1e308, 1.7976931348623157e308, 10**308, 1e23,
           10**23, 99999999999999991611392, 2**53, 2**53 + 1, 9007199254740992.0, 2.0**60, 2**60, 1152921504606847000, 2**63, 9.223372036854776e18,
           5e-324, -(10**40), 10**40]  # fmt: skip
STRINGS = ["", "RU", "ru", "Ru", "BY", "paid", "ß", "SS", "ss", "straße", "STRASSE", "Москва", "МОСКВА", "ǅ", "ǆ",
           "İ", "i̇", "ﬀ", "FF", "K", "k", "é", "e\u0301", "🙂", "5", "5.0", "true", " RU", "RU ", "%", "_", "\\"]  # fmt: skip

text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6
)  # valid Unicode: the rules refuse surrogates
moments = st.builds(
    lambda d, sep, off: (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}{sep}{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{d.microsecond:06d}{off}"
    ),
    st.datetimes(),
    st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["", "Z", "+03:00", "-0530", "+14", "-23:59"]),
)
strings = st.sampled_from(STRINGS + VERSIONS + NOT_VERSIONS + DATES + NOT_DATES) | text | moments
numbers = (
    st.sampled_from(NUMBERS)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-10, 10).map(lambda n: n / 4)
)
values = strings | numbers | st.booleans()
traits_dicts = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)


def operand(op: str) -> st.SearchStrategy:
    kind = OPERATORS[op].kind
    if kind == "number":
        return numbers.filter(lambda n: not isinstance(n, float) or math.isfinite(n))
    if kind == "date":
        return st.sampled_from(DATES) | moments
    if kind == "version":
        return st.sampled_from(VERSIONS)
    if kind == "boolean":
        return st.booleans()
    if kind == "list":
        return st.lists(strings, min_size=1, max_size=4)
    return strings


def fitting(op: str, present: list) -> list:
    """The (key, value) pairs of the traits whose value an operator's operand could be (so that
    rules match some rows)."""
    kind = OPERATORS[op].kind
    return [(k, v) for k, v in present if v in _fitting(kind, [v])]


def _fitting(kind: str, present: list) -> list:
    if kind in ("string", "list"):
        return [v for v in present if isinstance(v, str)]
    if kind == "number":
        return [v for v in present if type(v) in (int, float) and abs(v) < 10**309]
    if kind == "boolean":
        return [v for v in present if type(v) is bool]
    if kind == "date":
        return [v for v in present if isinstance(v, str) and moment_key(v) is not None]
    if kind == "version":
        return [v for v in present if isinstance(v, str) and version_key(v) is not None]
    return []


@st.composite
def rule_sets(draw: st.DrawFn, present: tuple = ()) -> RuleSet:
    """1-3 rules of 1-3 conditions; with ``present`` (values of the traits drawn), operands are
    often taken from them."""
    raw = []
    for _ in range(draw(st.integers(1, 3))):
        conditions = []
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(list(OPERATORS)))
            ci = OPERATORS[op].kind in ("string", "list") and draw(st.integers(0, 5)) == 0
            value, key = draw(operand(op)), draw(st.sampled_from(KEYS))
            taken = fitting(op, list(present))
            if taken and draw(st.integers(0, 3)):
                picked = draw(st.lists(st.sampled_from(taken), min_size=1, max_size=3))
                key = picked[0][0]
                value = [v for _, v in picked] if OPERATORS[op].kind == "list" else picked[0][1]
            conditions.append({**condition(op, value, ci), "trait": key})
        raw.append({"conditions": conditions})
    return parse(raw)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(traits_dicts, min_size=1, max_size=40), st.data())
def test_sql_agrees_with_match(traits_table, rows: list[dict], data: st.DataObject) -> None:
    present = tuple((k, v) for t in rows for k, v in t.items())
    load(traits_table, rows)
    for rules in data.draw(st.lists(rule_sets(present), min_size=1, max_size=4)):
        check(traits_table, rules, rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(traits_dicts, min_size=1, max_size=40), st.sampled_from(list(OPERATORS)), st.data())
def test_each_operator_hits_and_misses(traits_table, rows: list[dict], op: str, data: st.DataObject) -> None:
    """One condition per rule set, its operand taken from the traits drawn, so matches happen."""
    present = [t[k] for t in rows for k in t]
    kind = OPERATORS[op].kind
    fits = {
        "string": lambda v: isinstance(v, str) and len(v) <= 256 and "\x00" not in v,
        "number": lambda v: type(v) in (int, float),
        "boolean": lambda v: type(v) is bool,
        "date": lambda v: isinstance(v, str) and v in DATES,
        "version": lambda v: isinstance(v, str) and v in VERSIONS,
    }
    taken = [v for v in present if kind in fits and fits[kind](v)]
    value = data.draw(st.sampled_from(taken)) if taken else data.draw(operand(op))
    if kind == "list":
        strings_present = [v for v in present if isinstance(v, str)]
        value = data.draw(
            st.lists(st.sampled_from(strings_present), min_size=1) if strings_present else operand(op)
        )
    ci = kind in ("string", "list") and data.draw(st.booleans())
    rules = parse([{"conditions": [{**condition(op, value, ci), "trait": data.draw(st.sampled_from(KEYS))}]}])
    load(traits_table, rows)
    check(traits_table, rules, rows)
