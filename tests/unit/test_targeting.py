"""The rule language (webapp/services/targeting): every operator against a table of edge values,
validation naming every problem, canonical round trips and arbitrary JSON by hypothesis.
The same table runs through the SQL translation in tests/services/test_targeting_sql.py."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.rules import MAX_RULE_CONDITIONS, MAX_RULE_STRING, MAX_RULE_VALUES, MAX_RULES
from webapp.services.targeting import OPERATORS, RuleSet, RulesInvalid, parse
from webapp.services.targeting.readings import moment_key, version_key

MISSING = object()  # the user has no such trait (but has others)
CI = "ci"  # the case marks a case_insensitive condition

# (operator, operand, trait value, expected match[, CI])
CASES: list[tuple] = [
    # strings: only a string trait is read by a string operator
    ("str_eq", "paid", "paid", True),
    ("str_eq", "paid", "Paid", False),
    ("str_eq", "paid", "Paid", True, CI),
    ("str_eq", "5", 5, False),
    ("str_eq", "5", "5", True),
    ("str_eq", "5.0", 5.0, False),
    ("str_eq", "true", True, False),
    ("str_eq", "", "", True),
    ("str_eq", "", " ", False),
    ("str_eq", "", MISSING, False),
    ("str_eq", "straße", "STRASSE", True, CI),
    ("str_eq", "Москва", "МОСКВА", True, CI),
    ("str_eq", "Москва", "МОСКВА", False),
    ("str_eq", "é", "e\u0301", False),  # no normalisation: composed and decomposed differ
    ("str_eq", "🙂", "🙂", True),
    ("str_eq", "ǅ", "ǆ", True, CI),  # title case folds too
    ("str_in", ["RU", "BY"], "BY", True),
    ("str_in", ["RU", "BY"], "by", False),
    ("str_in", ["RU", "BY"], "by", True, CI),
    ("str_in", ["5"], 5, False),
    ("str_in", ["True", "true", "1"], True, False),
    ("str_in", ["RU"], MISSING, False),
    ("str_in", [""], "", True),
    ("str_not_in", ["RU", "BY"], "DE", True),
    ("str_not_in", ["RU", "BY"], "RU", False),
    ("str_not_in", ["RU", "BY"], "ru", True),
    ("str_not_in", ["RU", "BY"], "ru", False, CI),
    ("str_not_in", ["RU", "BY"], MISSING, False),  # a missing trait is in no list and out of none
    ("str_not_in", ["RU", "BY"], 5, False),  # nor is a number
    ("str_not_in", ["RU"], "", True),
    ("str_contains", "ab", "xaby", True),
    ("str_contains", "AB", "xaby", False),
    ("str_contains", "AB", "xaby", True, CI),
    ("str_contains", "", "anything", True),
    ("str_contains", "", 0, False),
    ("str_contains", "ß", "STRASSE", True, CI),  # casefold("ß") == "ss"
    ("str_contains", "5", 15, False),
    ("str_starts_with", "Ива", "Иван", True),
    ("str_starts_with", "ива", "ИВАН", True, CI),
    ("str_starts_with", "ива", "ИВАН", False),
    ("str_starts_with", "", "", True),
    ("str_ends_with", ".ru", "mail.ru", True),
    ("str_ends_with", ".RU", "mail.ru", True, CI),
    ("str_ends_with", "mail.ru", ".ru", False),
    ("str_ends_with", "", "x", True),
    # numbers: only a JSON number (not a boolean, not a numeric string); compared as written
    ("num_eq", 5, 5, True),
    ("num_eq", 5, 5.0, True),
    ("num_eq", 5.0, 5, True),
    ("num_eq", 5, "5", False),
    ("num_eq", 5, "5.0", False),
    ("num_eq", 1, True, False),
    ("num_eq", 0, False, False),
    ("num_eq", 0, -0.0, True),
    ("num_eq", -0.0, 0, True),
    ("num_ne", 5, 6, True),
    ("num_ne", 5, 5.0, False),
    ("num_ne", 5, MISSING, False),
    ("num_ne", 5, "x", False),
    ("num_ne", 5, True, False),
    ("num_lt", 0.3, 0.1 + 0.2, False),  # 0.30000000000000004 is written so
    ("num_gt", 0.3, 0.1 + 0.2, True),
    ("num_lte", 0.1, 0.1, True),
    ("num_gt", 1e308, 10**400, True),
    ("num_lt", 1e308, 1.7976931348623157e308, False),
    ("num_gte", 1e308, 10**308, True),  # 1e308 is written 1e+308: 10**308 exactly
    ("num_eq", 1e308, 10**308, True),
    ("num_eq", 1e23, 10**23, True),  # as written, not as the nearest binary double
    ("num_eq", 1e23, 99999999999999991611392, False),
    ("num_gt", 1e23, 99999999999999995000000, False),
    ("num_eq", 10**23, 1e23, True),
    ("num_gt", 2**63, 2**63 + 1, True),
    ("num_gt", 2**63, 9223372036854775808.0, True),  # written 9.223372036854776e+18: 9223372036854776000
    ("num_eq", 9007199254740993, 9007199254740992.0, False),
    ("num_gt", 2**60, 2.0**60, True),  # 2.0**60 is written 1.152921504606847e+18
    ("num_eq", 2.0**60, 2**60, False),
    ("num_eq", 2.0**60, 1152921504606847000, True),
    ("num_lt", 2**53 + 1, 2.0**53, True),
    ("num_eq", 9007199254740992.0, 9007199254740992, True),
    ("num_lt", -(10**300), -1e300, False),
    ("num_gte", -5, -5, True),
    ("num_lt", 0, -1e-300, True),
    ("num_gt", 5, MISSING, False),
    # dates: naive is UTC, date-only is midnight UTC, offsets converted, fractions cut to µs
    ("date_before", "2026-03-01", "2026-02-28T23:59:59.999999999Z", True),
    ("date_before", "2026-03-01", "2026-03-01T00:00:00Z", False),
    ("date_after", "2024-02-28", "2024-02-29", True),  # a leap day
    ("date_after", "2023-02-28", "2023-02-29", False),  # not one: does not read
    ("date_after", "1900-01-01", "1900-02-29", False),  # 1900 was not a leap year
    ("date_after", "1999-01-01", "2000-02-29", True),  # 2000 was
    ("date_before", "2026-01-01T00:00:00+03:00", "2025-12-31T21:00:00Z", False),  # the same moment
    ("date_before", "2026-01-01T00:00:00+03:00", "2025-12-31T20:59:59Z", True),
    ("date_after", "2025-12-31T23:59:59Z", "2026-01-01T00:00", True),  # naive: UTC
    ("date_after", "2025-12-31T23:59:59Z", "2026-01-01 00:00", True),
    ("date_after", "2026-01-01T09:00Z", "2026-01-01t10:00z", True),
    ("date_before", "2026-01-01T05:00Z", "2026-01-01T10:00+0530", True),
    ("date_before", "2026-01-01T05:00Z", "2026-01-01T10:00+05", False),  # exactly 05:00Z
    ("date_after", "2026-01-01T10:00Z", "2026-01-01T05:00-05:01", True),
    ("date_before", "2026-01-01T00:00:00.123457Z", "2026-01-01T00:00:00.1234569Z", True),  # cut, not rounded
    ("date_before", "0001-01-01", "0001-01-01T00:00+01:00", True),  # 1 BC in UTC still compares
    ("date_after", "9999-12-31", "9999-12-31T23:59:59-23:59", True),
    ("date_before", "2030-01-01", 20260101, False),
    ("date_before", "2030-01-01", "2026-01-01T24:00:00Z", False),
    ("date_before", "2030-01-01", "2026-01-01T23:59:60Z", False),  # no leap second
    ("date_before", "2030-01-01", "2026-13-01", False),
    ("date_before", "2030-01-01", "2026-04-31", False),
    ("date_before", "2030-01-01", "2026-06-31", False),
    ("date_before", "2030-01-01", "2026-09-31", False),
    ("date_before", "2030-01-01", "2026-11-31T10:00Z", False),
    ("date_before", "2030-01-01", "2026-12-31T10:00Z", True),
    ("date_before", "2030-01-01", "2026-01-32", False),
    ("date_before", "2030-01-01", "0000-01-01", False),
    ("date_before", "2030-01-01", "2026-W01-1", False),
    ("date_before", "2030-01-01", "20260101", False),
    ("date_before", "2030-01-01", "2026-01-01T10", False),
    ("date_before", "2030-01-01", "2026-01-01Z", False),
    ("date_before", "2030-01-01", "2026-01-01T10:00+24:00", False),
    ("date_before", "2030-01-01", "2026-01-01\n", False),
    ("date_before", "2030-01-01", "２０２６-01-01", False),  # digits are ASCII digits
    ("date_before", "2030-01-01", MISSING, False),
    # versions: missing parts are 0, pre-releases as SemVer orders them, build ignored
    ("semver_eq", "5.2", "5.2.0", True),
    ("semver_eq", "5.2", "5.2.0.0", True),
    ("semver_eq", "5.2.0", "5.2", True),
    ("semver_eq", "5.2", "5.02", True),
    ("semver_gte", "5.2", "5.10", True),
    ("semver_gte", "5.2", "5.1.99", False),
    ("semver_lt", "5.2", "5.1.9", True),
    ("semver_lte", "5.2", "5.2.0", True),
    ("semver_gt", "5.2", "5.2.0.1", True),
    ("semver_lt", "1.0.0", "1.0.0-rc.1", True),
    ("semver_gt", "1.0.0-rc.1", "1.0.0", True),
    ("semver_gt", "1.0.0-alpha", "1.0.0-alpha.1", True),
    ("semver_lt", "1.0.0-alpha.beta", "1.0.0-alpha.1", True),
    ("semver_eq", "1.0.0", "1.0.0+build.7", True),
    ("semver_eq", "1.0.0-beta+a", "1.0.0-beta+b", True),
    ("semver_gt", "18446744073709551615", "18446744073709551616.0", True),
    ("semver_eq", "5", 5, False),
    ("semver_eq", "1.0", "v1.0", False),
    ("semver_eq", "1.2.3.4", "1.2.3.4.0", False),
    ("semver_lt", "9", "1..2", False),
    ("semver_lt", "9", "1.0.0-", False),
    ("semver_lt", "9", "1.0.0-a..b", False),
    ("semver_lt", "9", "", False),
    ("semver_lt", "9", "1" * 300, False),  # longer than any operand: does not read
    ("semver_lt", "9", MISSING, False),
    # booleans, presence
    ("bool_eq", True, True, True),
    ("bool_eq", True, 1, False),
    ("bool_eq", False, 0, False),
    ("bool_eq", False, "false", False),
    ("bool_eq", False, False, True),
    ("is_set", None, "", True),
    ("is_set", None, False, True),
    ("is_set", None, MISSING, False),
    ("not_set", None, MISSING, True),
    ("not_set", None, 0, False),
]


def condition(op: str, operand: object, ci: bool = False) -> dict:
    kind = OPERATORS[op].kind
    out: dict = {"trait": "t", "operator": op}
    if kind == "list":
        out["values"] = operand
    elif kind != "presence":
        out["value"] = operand
    if ci:
        out["case_insensitive"] = True
    return out


def case_traits(value: object) -> dict:
    return {"other": 1} if value is MISSING else {"t": value, "other": 1}


def case_id(case: tuple) -> str:
    return f"{case[0]}-{case[1]!r:.30}-{case[2] if case[2] is not MISSING else 'MISSING'!r:.30}{'-ci' if len(case) > 4 else ''}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_operator_table(case: tuple) -> None:
    op, operand, value, expected = case[:4]
    rules = parse([{"conditions": [condition(op, operand, len(case) > 4)]}])
    assert (rules.match(case_traits(value)) == 0) is expected


SEMVER_ORDER = [  # SemVer 2.0, item 11's example, then releases
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1-0",
    "1.0.1",
    "1.2",
    "1.10",
    "2",
]


def test_semver_order_every_pair() -> None:
    for (i, a), (j, b) in itertools.product(enumerate(SEMVER_ORDER), repeat=2):
        for op, holds in (("semver_lt", i < j), ("semver_lte", i <= j), ("semver_eq", i == j),
                          ("semver_gte", i >= j), ("semver_gt", i > j)):  # fmt: skip
            rules = parse([{"conditions": [{"trait": "v", "operator": op, "value": b}]}])
            assert (rules.match({"v": a}) == 0) is holds, (a, op, b)


def test_readings_directly() -> None:
    assert version_key("5.2") == version_key("5.2.0+x") == ((5, 2, 0, 0), 1, ())
    assert version_key("1.0.0-alpha.1") == ((1, 0, 0, 0), 0, ((1, "alpha"), (0, 1)))
    assert moment_key("1970-01-01") == 0
    assert moment_key("1970-01-01T00:00:00.000001+00:00") == 1
    assert moment_key("1970-01-01T03:00+03:00") == 0
    assert moment_key("2026-02-29") is None


def test_first_matching_rule_and_none() -> None:
    rules = parse(
        [
            {"conditions": [{"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                            {"trait": "plan", "operator": "str_eq", "value": "paid"}]},
            {"conditions": [{"trait": "country", "operator": "str_eq", "value": "RU"}]},
        ]
    )  # fmt: skip
    assert rules.match({"country": "RU", "plan": "paid"}) == 0
    assert rules.match({"country": "RU", "plan": "free"}) == 1
    assert rules.match({"country": "BY", "plan": "free"}) is None
    assert rules.match({}) is None
    assert parse([]).match({"a": 1}) is None
    assert rules.traits() == {"country", "plan"}


def test_explain_in_plain_words() -> None:
    rules = parse(
        [
            {"conditions": [{"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                            {"trait": "plan", "operator": "str_eq", "value": "paid"}]},
            {"conditions": [{"trait": "app_version", "operator": "semver_gte", "value": "5.2"},
                            {"trait": "age", "operator": "num_lt", "value": 18},
                            {"trait": "signup", "operator": "date_after", "value": "2026-01-01"},
                            {"trait": "beta", "operator": "bool_eq", "value": False},
                            {"trait": "email", "operator": "not_set"},
                            {"trait": "city", "operator": "str_eq", "value": "Нижний Новгород", "case_insensitive": True},
                            {"trait": "ref", "operator": "str_not_in", "values": ["", "a, b"]}]},
            {"conditions": [{"trait": "n", "operator": "str_in", "values": [str(i) for i in range(25)]}]},
        ]
    )  # fmt: skip
    assert rules.explain(0) == "country in [RU, BY] and plan = paid"
    assert rules.explain(1) == (
        "app_version ≥ 5.2 (version) and age < 18 (number) and signup after 2026-01-01 (date) and "
        'beta is false and email is not set and city = "Нижний Новгород" (any case) and ref not in ["", "a, b"]'
    )
    assert rules.explain(2) == "n in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … and 15 more]"


def test_canonical_normalises() -> None:
    raw = [
        {"conditions": [
            {"value": -0.0, "operator": "num_eq", "trait": "x"},
            {"trait": "c", "operator": "str_in", "values": ["RU", "BY", "RU"], "case_insensitive": False},
            {"trait": "c", "operator": "str_eq", "value": "RU", "case_insensitive": True},
            {"trait": "d", "operator": "is_set"},
        ]}
    ]  # fmt: skip
    rules = parse(raw)
    assert rules.canonical() == [
        {"conditions": [
            {"trait": "x", "operator": "num_eq", "value": 0.0},
            {"trait": "c", "operator": "str_in", "values": ["RU", "BY"]},
            {"trait": "c", "operator": "str_eq", "value": "RU", "case_insensitive": True},
            {"trait": "d", "operator": "is_set"},
        ]}
    ]  # fmt: skip
    assert parse(json.loads(json.dumps(rules.canonical()))) == rules


def problems(raw: object) -> list[tuple[str, str]]:
    with pytest.raises(RulesInvalid) as caught:
        parse(raw)
    assert caught.value.status == 422 and caught.value.code == "validation_failed"
    for d in caught.value.details:
        assert set(d) >= {"field", "message", "code"} and d["message"]
    return [(d["field"], d["code"]) for d in caught.value.details]


def test_every_problem_named_with_its_path() -> None:
    assert problems({"conditions": []}) == [("rules", "rules_not_list")]
    assert problems(
        [
            {"conditions": [
                {"trait": "1x", "operator": "num_gt", "value": "abc"},
                {"operator": "nope"},
                {"trait": "v", "operator": "semver_lt", "value": "x.y"},
                {"trait": "d", "operator": "date_after", "value": "2026-02-30"},
                {"trait": "d", "operator": "date_after", "value": "next tuesday"},
                {"trait": "s", "operator": "str_in", "value": "RU"},
                {"trait": "s", "operator": "str_in", "values": []},
                {"trait": "s", "operator": "str_in", "values": ["ok", 5, "x" * (MAX_RULE_STRING + 1), "a\x00", "\ud800"]},
                {"trait": "s", "operator": "str_eq", "values": ["a"], "case_insensitive": "yes"},
                {"trait": "n", "operator": "num_gt", "value": 5, "case_insensitive": True},
                {"trait": "n", "operator": "num_gt", "value": True},
                {"trait": "n", "operator": "num_gt", "value": float("nan")},
                {"trait": "n", "operator": "num_gt", "value": 10**309},
                {"trait": "n", "operator": "is_set", "value": 1},
                {"trait": "b", "operator": "bool_eq", "value": "true"},
                {"trait": "b", "operator": "bool_eq", "value": True, "colour": "red"},
                "not an object",
            ], "extra": 1},
            [],
            {},
            {"conditions": {}},
        ]
    ) == [
        ("rules[0].extra", "unknown_field"),
        ("rules[0].conditions[0].trait", "trait_invalid"),
        ("rules[0].conditions[0].value", "value_not_number"),
        ("rules[0].conditions[1].trait", "trait_missing"),
        ("rules[0].conditions[1].operator", "operator_unknown"),
        ("rules[0].conditions[2].value", "version_invalid"),
        ("rules[0].conditions[3].value", "date_invalid"),
        ("rules[0].conditions[4].value", "date_invalid"),
        ("rules[0].conditions[5].value", "value_not_allowed"),
        ("rules[0].conditions[5].values", "values_missing"),
        ("rules[0].conditions[6].values", "values_empty"),
        ("rules[0].conditions[7].values[1]", "value_not_string"),
        ("rules[0].conditions[7].values[2]", "string_too_long"),
        ("rules[0].conditions[7].values[3]", "string_nul"),
        ("rules[0].conditions[7].values[4]", "string_invalid"),
        ("rules[0].conditions[8].case_insensitive", "case_insensitive_not_boolean"),
        ("rules[0].conditions[8].values", "value_not_allowed"),
        ("rules[0].conditions[8].value", "value_missing"),
        ("rules[0].conditions[9].case_insensitive", "case_insensitive_not_allowed"),
        ("rules[0].conditions[10].value", "value_not_number"),
        ("rules[0].conditions[11].value", "number_not_finite"),
        ("rules[0].conditions[12].value", "number_out_of_range"),
        ("rules[0].conditions[13].value", "value_not_allowed"),
        ("rules[0].conditions[14].value", "value_not_boolean"),
        ("rules[0].conditions[15].colour", "unknown_field"),
        ("rules[0].conditions[16]", "condition_not_object"),
        ("rules[1]", "rule_not_object"),
        ("rules[2].conditions", "conditions_missing"),
        ("rules[3].conditions", "conditions_not_list"),
    ]  # fmt: skip


def test_limits() -> None:
    one = {"trait": "a", "operator": "is_set"}
    parse([{"conditions": [one] * MAX_RULE_CONDITIONS}] * MAX_RULES)
    assert problems([{"conditions": [one]}] * (MAX_RULES + 1)) == [("rules", "too_many_rules")]
    assert problems([{"conditions": [one] * (MAX_RULE_CONDITIONS + 1)}]) == [
        ("rules[0].conditions", "too_many_conditions")
    ]
    listed = {"trait": "a", "operator": "str_in", "values": [str(i) for i in range(MAX_RULE_VALUES)]}
    parse([{"conditions": [listed]}])
    assert problems([{"conditions": [{**listed, "values": [*listed["values"], "x"]}]}]) == [
        ("rules[0].conditions[0].values", "too_many_values")
    ]
    assert problems([{"conditions": [listed] * 11}]) == [("rules", "too_many_values_in_all")]
    parse([{"conditions": [{"trait": "a" * 64, "operator": "str_eq", "value": "x" * MAX_RULE_STRING}]}])
    assert problems([{"conditions": [{"trait": "a" * 65, "operator": "is_set"}]}]) == [
        ("rules[0].conditions[0].trait", "trait_invalid")
    ]
    for bad in ("", "é", "a b", "_ok\n", ".a", "-a", "9"):
        assert problems([{"conditions": [{"trait": bad, "operator": "is_set"}]}]) == [
            ("rules[0].conditions[0].trait", "trait_invalid")
        ]


def test_problem_list_is_capped_and_counted() -> None:
    many = [{"trait": "a", "operator": "str_in", "values": [1] * 150}]
    with pytest.raises(RulesInvalid) as caught:
        parse([{"conditions": many}])
    assert len(caught.value.details) == 100
    assert caught.value.message == "the rules are invalid (150 problems, the first 100 listed)"


# -- hypothesis ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(["trait", "operator", "value", "values", "case_insensitive", "conditions", "x"])
NEAR = st.recursive(  # shapes close to valid rules, so the deeper checks are reached
    st.sampled_from([*OPERATORS, "a", "1.0.0-beta", "2026-02-29", "", True, 5, 1e400, None])
    | st.integers()
    | st.floats()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(JSON, NEAR, st.lists(st.fixed_dictionaries({"conditions": st.lists(NEAR, max_size=4)}))))
def test_parse_takes_anything(raw: object) -> None:
    try:
        rules = parse(raw)
    except RulesInvalid as exc:
        assert exc.details and all(isinstance(d["field"], str) and d["code"] for d in exc.details)
        json.dumps(exc.details)  # the API answers them as they are
        return
    assert parse(json.loads(json.dumps(rules.canonical()))) == rules
    for i in range(len(rules)):
        rules.explain(i)


def operand_for(op: str) -> st.SearchStrategy:
    kind = OPERATORS[op].kind
    text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10)
    return {
        "string": text,
        "list": st.lists(text, min_size=1, max_size=5),
        "number": st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False),
        "date": st.sampled_from(["2026-01-01", "2024-02-29T23:59:59.5+03:00", "0001-01-01 00:00z"]),
        "version": st.sampled_from(["5.2", "1.0.0-alpha.1", "1.2.3.4+b"]),
        "boolean": st.booleans(),
        "presence": st.none(),
    }[kind]


@st.composite
def valid_rules(draw: st.DrawFn) -> list:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        conditions = []
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(list(OPERATORS)))
            ci = OPERATORS[op].kind in ("string", "list") and draw(st.booleans())
            conditions.append(
                {
                    **condition(op, draw(operand_for(op)), ci),
                    "trait": draw(st.sampled_from(["a", "b.c", "_d-1"])),
                }
            )
        rules.append({"conditions": conditions})
    return rules


@settings(max_examples=300, deadline=None)
@given(valid_rules())
def test_canonical_round_trips(raw: list) -> None:
    rules = parse(raw)
    stored = json.loads(json.dumps(rules.canonical()))
    again = parse(stored)
    assert again == rules and again.canonical() == stored
    assert isinstance(rules, RuleSet) and len(rules) == len(raw)
