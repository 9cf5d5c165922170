"""The rule language of dynamic segments (issue 29): rules over a user's traits, parsed and
validated (``parse``), evaluated (``RuleSet.match``), explained, stored (``canonical``) and
translated to SQL over a jsonb column of traits (``RuleSet.sql``). Pure and bottom-level: it
imports no other service package. docs/design.md, "Rules over traits: the language"."""

from webapp.services.targeting.model import OPERATORS, Condition, Kind, Operator, Trait
from webapp.services.targeting.parse import RulesInvalid, parse
from webapp.services.targeting.ruleset import Rule, RuleSet
from webapp.services.targeting.sql import SqlFilter

__all__ = [
    "OPERATORS",
    "Condition",
    "Kind",
    "Operator",
    "Rule",
    "RuleSet",
    "RulesInvalid",
    "SqlFilter",
    "Trait",
    "parse",
]
