"""The rule builder's form rows (webapp/web/rules.py) against the rule language: stored rules
shown in the builder and saved back untouched are the same rules; positions map both ways."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_targeting import valid_rules
from webapp.services.targeting import parse
from webapp.web import rules as builder


def expressible(raw: list) -> bool:
    """Rules whose every text operand a person can type in the builder: no spaces around it (a
    typed value is trimmed), not empty (an empty field is a missing value), no line break."""

    def fine(text: object) -> bool:
        return not isinstance(text, str) or (
            text == text.strip() and text != "" and "\n" not in text and "\r" not in text
        )

    for rule in raw:
        for c in rule["conditions"]:
            if not fine(c.get("value")) or not all(fine(v) for v in c.get("values", [])):
                return False
    return True


@settings(max_examples=400, deadline=None)
@given(valid_rules())
def test_stored_rules_through_the_builder_are_the_same_rules(raw: list) -> None:
    stored = json.loads(json.dumps(parse(raw).canonical()))
    if not expressible(stored):
        return
    rows = builder.rows_of(stored)
    # as the browser posts them: every field of every row, the list box's line breaks as CRLF
    form: dict[str, str] = {}
    for i, rule in enumerate(rows):
        for j, r in enumerate(rule):
            n = f"r{i}c{j}_"
            form |= {n + "trait": r.trait, n + "operator": r.operator, n + "value": r.value}
            form |= {n + "values": r.values.replace("\n", "\r\n"), n + "flag": r.flag}
            if r.case:
                form[n + "case"] = "1"
    again = parse(builder.raw_rules(builder.rows_from_form(form)))
    assert again == parse(stored)
    assert again.canonical() == stored


@given(
    st.integers(0, 9),
    st.integers(0, 19),
    st.sampled_from(["trait", "operator", "value", "values", "values[3]", "case_insensitive"]),
)
def test_every_parser_path_names_a_field_of_the_form(i: int, j: int, part: str) -> None:
    field = builder.field_of(f"rules[{i}].conditions[{j}].{part}")
    expected = {"trait": "trait", "operator": "operator", "case_insensitive": "case"}.get(part, "value")
    assert field == f"r{i}c{j}_{expected}"
    assert builder.field_of(f"rules[{i}].conditions") == f"r{i}" == builder.field_of(f"rules[{i}]")
    assert builder.field_of("rules") is None


def test_list_values_as_typed() -> None:
    assert builder.split_values("RU, BY ,, KZ") == ["RU", "BY", "KZ"]
    assert builder.split_values("Nizhny Novgorod, RU\r\nKazan\r\n") == ["Nizhny Novgorod, RU", "Kazan"]
    assert builder.split_values("a, b\n") == ["a, b"]  # a line break: one value per line
    assert builder.split_values(" \n , ") == [","]
