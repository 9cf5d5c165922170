"""Rules as clients send them (JSON) validated into a RuleSet, every problem named."""

from __future__ import annotations

import math
from typing import Any

from webapp.errors import Detail, Problem, ValidationFailed, detail
from webapp.rules import (
    MAX_RULE_CONDITIONS,
    MAX_RULE_NUMBER,
    MAX_RULE_STRING,
    MAX_RULE_VALUES,
    MAX_RULES,
    MAX_RULESET_VALUES,
    TRAIT_KEY_HELP,
    is_trait_key,
)
from webapp.services.targeting.model import CASE_KINDS, OPERATORS, Condition, Kind, Trait
from webapp.services.targeting.readings import moment_key, version_key
from webapp.services.targeting.ruleset import Rule, RuleSet

MAX_DETAILS = 100  # problems named in one error, as the API's body validation (api.helpers) names
RULE_KEYS = frozenset({"conditions"})
CONDITION_KEYS = frozenset({"trait", "operator", "value", "values", "case_insensitive"})
VERSION_HELP = "a version such as 5.2, 5.2.1 or 1.0.0-beta.2"
DATE_HELP = "an ISO 8601 date or date-time such as 2026-11-01 or 2026-11-01T10:00:00+03:00"


class RulesInvalid(ValidationFailed):
    """Rules that do not validate: ``details`` names each problem (field, message, code,
    parameters; errors.detail), up to MAX_DETAILS of them."""

    def __init__(self, details: list[Detail], total: int, field: str) -> None:
        if total == 1:
            message = f"{details[0]['field']} {details[0]['message']}"
        else:
            listed = f", the first {MAX_DETAILS} listed" if total > MAX_DETAILS else ""
            message = f"the {field} are invalid ({total:,} problems{listed})"
        super().__init__(message, details)


def parse(raw: object, field: str = "rules") -> RuleSet:
    """``raw`` (parsed JSON: a list of ``{"conditions": [...]}``) as a RuleSet, or RulesInvalid
    naming every problem by its path (``rules[1].conditions[0].value``, under ``field``). Never
    raises anything else, whatever ``raw`` is."""
    problems = _Problems()
    rules: list[Rule] = []
    if not isinstance(raw, list):
        problems.found.append(detail(field, "must be a list of rules", code="rules_not_list"))
    else:
        if len(raw) > MAX_RULES:
            problems.found.append(
                detail(
                    field,
                    f"has {len(raw):,} rules; at most {MAX_RULES}",
                    code="too_many_rules",
                    max=MAX_RULES,
                )
            )
        budget = [MAX_RULESET_VALUES]
        for i, item in enumerate(raw[:MAX_RULES]):
            rule = _rule(item, f"{field}[{i}]", problems, budget)
            if rule is not None:
                rules.append(rule)
        if budget[0] < 0:
            problems.found.append(
                detail(
                    field,
                    f"lists more than {MAX_RULESET_VALUES:,} values in all",
                    code="too_many_values_in_all",
                    max=MAX_RULESET_VALUES,
                )
            )
    if problems.found:
        raise RulesInvalid(problems.found[:MAX_DETAILS], len(problems.found), field)
    return RuleSet(rules)


class _Problems:
    def __init__(self) -> None:
        self.found: list[Detail] = []


def _rule(item: object, path: str, problems: _Problems, budget: list[int]) -> Rule | None:
    if not isinstance(item, dict):
        problems.found.append(
            detail(path, 'must be an object: {"conditions": [...]}', code="rule_not_object")
        )
        return None
    before = len(problems.found)
    _unknown_keys(item, RULE_KEYS, path, problems)
    where = f"{path}.conditions"
    if "conditions" not in item:
        problems.found.append(
            detail(where, "is required: the conditions that must all hold", code="conditions_missing")
        )
        return None
    raw = item["conditions"]
    if not isinstance(raw, list):
        problems.found.append(detail(where, "must be a list of conditions", code="conditions_not_list"))
        return None
    if not raw:
        problems.found.append(detail(where, "needs at least one condition", code="conditions_empty"))
    if len(raw) > MAX_RULE_CONDITIONS:
        problems.found.append(
            detail(
                where,
                f"has {len(raw):,} conditions; at most {MAX_RULE_CONDITIONS}",
                code="too_many_conditions",
                max=MAX_RULE_CONDITIONS,
            )
        )
    conditions = [
        _condition(c, f"{where}[{j}]", problems, budget) for j, c in enumerate(raw[:MAX_RULE_CONDITIONS])
    ]
    if len(problems.found) > before:
        return None
    return tuple(c for c in conditions if c is not None)


def _unknown_keys(item: dict[Any, Any], allowed: frozenset[str], path: str, problems: _Problems) -> None:
    for key in item:
        if key not in allowed:
            name = _shown(key)
            problems.found.append(
                detail(
                    f"{path}.{name}" if is_trait_key(name) else path,
                    f"is not a known field (expected {', '.join(sorted(allowed))})",
                    code="unknown_field",
                    key=name,
                )
            )


def _condition(item: object, path: str, problems: _Problems, budget: list[int]) -> Condition | None:
    if not isinstance(item, dict):
        problems.found.append(
            detail(
                path,
                'must be an object: {"trait": ..., "operator": ..., "value": ...}',
                code="condition_not_object",
            )
        )
        return None
    before = len(problems.found)
    _unknown_keys(item, CONDITION_KEYS, path, problems)
    trait = item.get("trait")
    if "trait" not in item:
        problems.found.append(detail(f"{path}.trait", "is required", code="trait_missing"))
    elif not is_trait_key(trait):
        problems.found.append(
            detail(
                f"{path}.trait",
                f"must be a trait key: {TRAIT_KEY_HELP}",
                code="trait_invalid",
                value=_shown(trait),
            )
        )
    name = item.get("operator")
    if "operator" not in item:
        problems.found.append(detail(f"{path}.operator", "is required", code="operator_missing"))
        return None
    if not isinstance(name, str) or name not in OPERATORS:
        problems.found.append(
            detail(
                f"{path}.operator",
                f"must be one of {', '.join(OPERATORS)}",
                code="operator_unknown",
                value=_shown(name),
            )
        )
        return None
    kind = OPERATORS[name].kind
    case_insensitive = item.get("case_insensitive", False)
    if not isinstance(case_insensitive, bool):
        problems.found.append(
            detail(f"{path}.case_insensitive", "must be true or false", code="case_insensitive_not_boolean")
        )
    elif case_insensitive and kind not in CASE_KINDS:
        problems.found.append(
            detail(
                f"{path}.case_insensitive",
                f"applies to string operators only, not {name}",
                code="case_insensitive_not_allowed",
                operator=name,
            )
        )
    value: Trait | None = None
    values: tuple[str, ...] = ()
    if kind is Kind.PRESENCE:
        for extra in ("value", "values"):
            if extra in item:
                problems.found.append(
                    detail(
                        f"{path}.{extra}", f"{name} takes no {extra}", code="value_not_allowed", operator=name
                    )
                )
    elif kind is Kind.LIST:
        if "value" in item:
            problems.found.append(
                detail(
                    f"{path}.value",
                    f"{name} takes values (a list), not value",
                    code="value_not_allowed",
                    operator=name,
                )
            )
        values = _values(item, path, name, problems, budget)
    else:
        if "values" in item:
            problems.found.append(
                detail(
                    f"{path}.values",
                    f"{name} takes one value, not values",
                    code="value_not_allowed",
                    operator=name,
                )
            )
        if "value" not in item:
            problems.found.append(
                detail(f"{path}.value", f"is required for {name}", code="value_missing", operator=name)
            )
        else:
            value = _operand(item["value"], kind, f"{path}.value", name, problems)
    if len(problems.found) > before:
        return None
    assert isinstance(trait, str) and isinstance(case_insensitive, bool)
    return Condition(trait, name, value, values, case_insensitive)


def _values(
    item: dict[Any, Any], path: str, name: str, problems: _Problems, budget: list[int]
) -> tuple[str, ...]:
    where = f"{path}.values"
    if "values" not in item:
        problems.found.append(
            detail(where, f"is required for {name}: a list of strings", code="values_missing", operator=name)
        )
        return ()
    raw = item["values"]
    if not isinstance(raw, list):
        problems.found.append(detail(where, "must be a list of strings", code="values_not_list"))
        return ()
    if not raw:
        problems.found.append(detail(where, "needs at least one value", code="values_empty"))
        return ()
    if len(raw) > MAX_RULE_VALUES:
        problems.found.append(
            detail(
                where,
                f"has {len(raw):,} values; at most {MAX_RULE_VALUES:,}",
                code="too_many_values",
                max=MAX_RULE_VALUES,
            )
        )
        return ()
    budget[0] -= len(raw)
    for k, v in enumerate(raw):
        problem = _string_problem(v)
        if problem is not None:
            problems.found.append(_string_detail(f"{where}[{k}]", problem))
    return tuple(dict.fromkeys(v for v in raw if isinstance(v, str)))


def _operand(raw: object, kind: Kind, where: str, name: str, problems: _Problems) -> Trait | None:
    if kind is Kind.BOOLEAN:
        if not isinstance(raw, bool):
            problems.found.append(
                detail(where, "must be true or false", code="value_not_boolean", operator=name)
            )
            return None
        return raw
    if kind is Kind.NUMBER:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            problems.found.append(
                detail(
                    where,
                    f"must be a number for {name}",
                    code="value_not_number",
                    operator=name,
                    value=_shown(raw),
                )
            )
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            problems.found.append(detail(where, "must be a finite number", code="number_not_finite"))
            return None
        if not -MAX_RULE_NUMBER < raw < MAX_RULE_NUMBER:
            problems.found.append(
                detail(where, "must have at most 309 digits before the point", code="number_out_of_range")
            )
            return None
        return 0.0 if raw == 0 and isinstance(raw, float) else raw  # -0.0 is 0.0
    problem = _string_problem(raw)
    if problem is not None:
        problems.found.append(_string_detail(where, problem, operator=name))
        return None
    assert isinstance(raw, str)
    if kind is Kind.VERSION and version_key(raw) is None:
        problems.found.append(
            detail(where, f"must be {VERSION_HELP}", code="version_invalid", operator=name, value=_shown(raw))
        )
        return None
    if kind is Kind.DATE and moment_key(raw) is None:
        problems.found.append(
            detail(where, f"must be {DATE_HELP}", code="date_invalid", operator=name, value=_shown(raw))
        )
        return None
    return raw


def _string_problem(value: object) -> Problem | None:
    """Why ``value`` cannot be a string operand, or None."""
    if not isinstance(value, str):
        return Problem("value_not_string", "must be a string")
    if len(value) > MAX_RULE_STRING:
        return Problem("string_too_long", f"must be at most {MAX_RULE_STRING} characters")
    if "\x00" in value:
        return Problem("string_nul", "contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Problem("string_invalid", "contains an unpaired surrogate (not valid Unicode text)")
    return None


def _string_detail(field: str, problem: Problem, **params: object) -> Detail:
    extra = {"max": MAX_RULE_STRING} if problem.code == "string_too_long" else {}
    return detail(field, problem.message, code=problem.code, **params, **extra)


def _shown(value: object) -> str:
    """A bad value as an error names it (cut short; a list or an object by its kind alone)."""
    if isinstance(value, str):
        return value[:40]
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value) if -(10**40) < value < 10**40 else "a number of more than 40 digits"
    if isinstance(value, float):
        return repr(value)
    return (
        "a list"
        if isinstance(value, list)
        else "an object"
        if isinstance(value, dict)
        else type(value).__name__
    )
