"""The rule language's pieces: operators (how each reads a trait) and conditions (pure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Trait = str | int | float | bool  # a trait's value: a JSON scalar (null deletes a trait, it is never stored)


class Kind(StrEnum):
    """What an operator reads a trait as, and so which operand it takes."""

    STRING = "string"  # value: a string; the trait must be a string
    LIST = "list"  # values: a list of strings; the trait must be a string
    NUMBER = "number"  # value: a number; the trait must be a number (not a boolean)
    DATE = "date"  # value: a moment string; the trait must be a string that reads as a moment
    VERSION = "version"  # value: a version string; the trait must be a string that reads as a version
    BOOLEAN = "boolean"  # value: true or false; the trait must be that boolean
    PRESENCE = "presence"  # no operand: whether the user has the trait at all


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    kind: Kind
    words: str  # how explain() says it: "=", "in", "starts with", "≥", "before"


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("str_eq", Kind.STRING, "="),
        Operator("str_in", Kind.LIST, "in"),
        Operator("str_not_in", Kind.LIST, "not in"),
        Operator("str_contains", Kind.STRING, "contains"),
        Operator("str_starts_with", Kind.STRING, "starts with"),
        Operator("str_ends_with", Kind.STRING, "ends with"),
        Operator("num_eq", Kind.NUMBER, "="),
        Operator("num_ne", Kind.NUMBER, "≠"),
        Operator("num_lt", Kind.NUMBER, "<"),
        Operator("num_lte", Kind.NUMBER, "≤"),
        Operator("num_gt", Kind.NUMBER, ">"),
        Operator("num_gte", Kind.NUMBER, "≥"),
        Operator("date_before", Kind.DATE, "before"),
        Operator("date_after", Kind.DATE, "after"),
        Operator("semver_eq", Kind.VERSION, "="),
        Operator("semver_lt", Kind.VERSION, "<"),
        Operator("semver_lte", Kind.VERSION, "≤"),
        Operator("semver_gt", Kind.VERSION, ">"),
        Operator("semver_gte", Kind.VERSION, "≥"),
        Operator("bool_eq", Kind.BOOLEAN, "is"),
        Operator("is_set", Kind.PRESENCE, "is set"),
        Operator("not_set", Kind.PRESENCE, "is not set"),
    )
}
CASE_KINDS = (Kind.STRING, Kind.LIST)  # the operators that take case_insensitive
EXPLAIN_LIST_ITEMS = 10  # values of a list explain() names before "… and N more"


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition, validated: ``value`` for a scalar operator (a str, an int or float, or a
    bool as its kind says), ``values`` for a list operator (distinct, in the order given),
    neither for is_set / not_set."""

    trait: str
    operator: str
    value: Trait | None = None
    values: tuple[str, ...] = ()
    case_insensitive: bool = False

    @property
    def kind(self) -> Kind:
        return OPERATORS[self.operator].kind

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trait": self.trait, "operator": self.operator}
        kind = self.kind
        if kind is Kind.LIST:
            out["values"] = list(self.values)
        elif kind is not Kind.PRESENCE:
            out["value"] = self.value
        if self.case_insensitive:
            out["case_insensitive"] = True
        return out

    def explain(self) -> str:
        op = OPERATORS[self.operator]
        kind = op.kind
        if kind is Kind.PRESENCE:
            return f"{self.trait} {op.words}"
        if kind is Kind.LIST:
            shown = ", ".join(_word(v) for v in self.values[:EXPLAIN_LIST_ITEMS])
            more = len(self.values) - EXPLAIN_LIST_ITEMS
            text = f"{self.trait} {op.words} [{shown}{f', … and {more} more' if more > 0 else ''}]"
        elif kind is Kind.BOOLEAN:
            return f"{self.trait} is {'true' if self.value else 'false'}"
        elif kind is Kind.NUMBER:
            return f"{self.trait} {op.words} {self.value} (number)"
        elif kind is Kind.DATE:
            return f"{self.trait} {op.words} {self.value} (date)"
        elif kind is Kind.VERSION:
            return f"{self.trait} {op.words} {self.value} (version)"
        else:
            assert isinstance(self.value, str)
            text = f"{self.trait} {op.words} {_word(self.value)}"
        return f"{text} (any case)" if self.case_insensitive else text


_BARE = re.compile(r"[\w.@:/+-]+")  # a string explain() shows without quotes (letters of any script)


def _word(text: str) -> str:
    """A string operand as a PM reads it: bare when it is one plain word, else in JSON quotes
    (so "", " RU", "a, b" and "[x]" stay visibly what they are)."""
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)
