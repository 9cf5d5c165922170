"""A segment's rules, parsed once: match, explain, canonical JSON, the traits read, SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from webapp.services.targeting.evaluate import Test, compile_condition
from webapp.services.targeting.model import Condition, Trait
from webapp.services.targeting.sql import Expr, SqlFilter, condition_sql

Rule = tuple[Condition, ...]  # its conditions, all of which must hold


class RuleSet:
    """Rules (OR) of conditions (AND), validated (build one with ``parse``). Immutable; equal
    when their canonical forms are."""

    __slots__ = ("_rules", "_tests")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules: tuple[Rule, ...] = tuple(tuple(rule) for rule in rules)
        self._tests: tuple[tuple[Test, ...], ...] = tuple(
            tuple(compile_condition(c) for c in rule) for rule in self._rules
        )

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def match(self, traits: Mapping[str, Trait]) -> int | None:
        """The index of the first rule whose every condition holds for these traits, or None."""
        for index, tests in enumerate(self._tests):
            for test in tests:
                if not test(traits):
                    break
            else:
                return index
        return None

    def canonical(self) -> list[dict[str, Any]]:
        """The JSON to store (``parse(rs.canonical()) == rs``): keys in one order, list values
        without repeats, ``case_insensitive`` only when true, -0.0 as 0.0."""
        return [{"conditions": [c.canonical() for c in rule]} for rule in self._rules]

    def explain(self, index: int) -> str:
        """Rule ``index`` in a PM's words: ``country in [RU, BY] and plan = paid``."""
        return " and ".join(c.explain() for c in self._rules[index])

    def traits(self) -> set[str]:
        """The trait keys the rules read."""
        return {c.trait for rule in self._rules for c in rule}

    def sql(self, column: Expr) -> SqlFilter:
        """A boolean expression over a jsonb column of traits (an object of scalars) selecting the
        users ``match`` selects; never NULL. When ``exact`` is false it selects a superset (some
        condition is case-insensitive, or compares versions with a pre-release operand): confirm
        each row with ``match``. No rules: false."""
        exact = True
        branches: list[Expr] = []
        for rule in self._rules:
            parts: list[Expr] = []
            for c in rule:
                expr, c_exact = condition_sql(c, column)
                parts.append(expr)
                exact = exact and c_exact
            branches.append(sa.and_(*parts))
        return SqlFilter(sa.or_(*branches) if branches else sa.false(), exact)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and self._rules == other._rules

    def __hash__(self) -> int:
        return hash(self._rules)

    def __repr__(self) -> str:
        return f"RuleSet({self.canonical()!r})"
