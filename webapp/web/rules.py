"""Dashboard: the segment page's Rules card (issue 29, stage 4) — the rules in words and a builder.

The builder is one form whose field names encode positions (``r0c1_trait``, ``r0c1_operator``,
``r0c1_value`` / ``r0c1_values`` / ``r0c1_flag``, ``r0c1_case``). Its buttons are submit buttons
(``action=add_condition:0``, ``remove_condition:0:1``, ``add_rule``, ``remove_rule:1``,
``clear``, ``check``, ``save``) posting the whole form to one endpoint: with htmx the card comes
back in place, without JavaScript the whole page comes back with the card as typed. One function
(:func:`raw_rules`) turns the rows into the raw rules list, so the one parser
(``targeting.parse``, the API's) validates it, and :func:`placed_errors` puts each problem it
names (``rules[0].conditions[1].value``) next to the field that holds it (``r0c1_value``).

Beside the form, a live line of how many users with traits the typed rules match and a few of
them (``membership.rules.audience``); a save that takes anyone out is confirmed with the numbers
of ``services.impact.preview_update(rules=...)`` first, against the catalog version they were
computed on, as the settings form's save is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import flash, make_response, redirect, render_template, request, url_for

from webapp.errors import AppError, Detail
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import abandon, transactional
from webapp.models import Segment
from webapp.models.enums import OperationKind
from webapp.platform.extensions import db
from webapp.rules import MAX_RULE_CONDITIONS, MAX_RULES
from webapp.services import impact, targeting
from webapp.services.membership import bulk
from webapp.services.membership import rules as rule_matches
from webapp.services.segments import lifecycle as segments
from webapp.services.targeting.model import CASE_KINDS, OPERATORS, Kind
from webapp.web.blueprint import bp
from webapp.web.helpers import catalog_moved, confirmed_version, is_htmx, live_segment
from webapp.web.messages import FormErrors, plain, words
from webapp.web.segments import page_context

CHANGED = "segment-changed"  # (web.segments.CHANGED: the parts of the page that summarise it refresh)
CARD = "segments/_rules.html"
KEY_SUGGESTIONS = 100  # trait keys offered in the datalist at once
DEFAULT_OPERATOR = "str_eq"
FIELD_RE = re.compile(r"r(\d{1,3})c(\d{1,3})_(trait|operator|value|values|flag|case)")
PATH_RE = re.compile(r"rules\[(\d+)\](?:\.conditions(?:\[(\d+)\](?:\.(\w+)(?:\[(\d+)\])?)?)?)?")
INT_RE = re.compile(r"[+-]?\d{1,400}")
NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,4})?")

# The operator menu: groups by what the trait is read as, each operator in plain words (its
# ``<option>`` says the kind too, since a closed <select> does not show its group).
KIND_LABELS: dict[Kind, str] = {
    Kind.STRING: "Text",
    Kind.LIST: "Text, one of a list",
    Kind.NUMBER: "Number",
    Kind.DATE: "Date",
    Kind.VERSION: "Version",
    Kind.BOOLEAN: "True or false",
    Kind.PRESENCE: "Any value",
}
OPERATOR_WORDS: dict[str, str] = {
    "str_eq": "is",
    "str_contains": "contains",
    "str_starts_with": "starts with",
    "str_ends_with": "ends with",
    "str_in": "is one of",
    "str_not_in": "is not one of",
    "num_eq": "= number",
    "num_ne": "≠ number",
    "num_lt": "< number",
    "num_lte": "≤ number",
    "num_gt": "> number",
    "num_gte": "≥ number",
    "date_before": "is before date",
    "date_after": "is after date",
    "semver_eq": "= version",
    "semver_lt": "< version",
    "semver_lte": "≤ version",
    "semver_gt": "> version",
    "semver_gte": "≥ version",
    "bool_eq": "is true / false",
    "is_set": "is set",
    "not_set": "is not set",
}
PLACEHOLDERS: dict[Kind, str] = {
    Kind.STRING: "e.g. paid",
    Kind.NUMBER: "e.g. 18 or 4.5",
    Kind.DATE: "e.g. 2026-11-01",
    Kind.VERSION: "e.g. 5.2.1",
}


def operator_menu() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(group label, [(operator, words, kind)]) in the order of ``model.OPERATORS``' kinds."""
    groups: dict[Kind, list[tuple[str, str, str]]] = {kind: [] for kind in KIND_LABELS}
    for name, op in OPERATORS.items():
        groups[op.kind].append((name, OPERATOR_WORDS.get(name, op.words), op.kind.value))
    return [(KIND_LABELS[kind], items) for kind, items in groups.items() if items]


@dataclass
class Row:
    """One condition as the form holds it (text, as typed)."""

    trait: str = ""
    operator: str = DEFAULT_OPERATOR
    value: str = ""  # a scalar operand
    values: str = ""  # a list operand: one per line, or separated by commas on one line
    flag: str = "true"  # a boolean operand
    case: bool = False

    @property
    def kind(self) -> str:
        op = OPERATORS.get(self.operator)
        return op.kind.value if op is not None else ""


Rows = list[list[Row]]


# -- rows from the stored rules, from the form; the raw rules from the rows ----------------------


def rows_of(stored: Any) -> Rows:
    """The builder's rows for stored (canonical) rules."""
    rows: Rows = []
    for rule in stored or []:
        conditions = []
        for c in rule.get("conditions", []):
            row = Row(trait=str(c.get("trait", "")), operator=str(c.get("operator", DEFAULT_OPERATOR)))
            if "values" in c:
                listed = [str(v) for v in c["values"]]
                if any("," in v for v in listed):  # one per line (a last line break: even for one value)
                    row.values = "\n".join(listed) + "\n"
                else:
                    row.values = ", ".join(listed)
            elif isinstance(c.get("value"), bool):
                row.flag = "true" if c["value"] else "false"
            elif "value" in c:
                row.value = (
                    _number_text(c["value"]) if isinstance(c["value"], int | float) else str(c["value"])
                )
            row.case = bool(c.get("case_insensitive"))
            conditions.append(row)
        rows.append(conditions)
    return rows


def _number_text(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(value).removesuffix(".0")


def rows_from_form(form: Mapping[str, str]) -> Rows:
    """The builder's rows as posted: positions read from the field names, then numbered again
    from 0 in their order (a removed row leaves no gap)."""
    found: dict[int, dict[int, Row]] = {}
    for name in form:
        match = FIELD_RE.fullmatch(name)
        if match is None:
            continue
        rule, cond, part = int(match[1]), int(match[2]), match[3]
        row = found.setdefault(rule, {}).setdefault(cond, Row())
        text = form.get(name, "")
        if part == "case":
            row.case = text not in ("", "0", "false", "off")
        else:
            setattr(row, part, text)
    # (one past each limit: the parser names it; nothing bigger is rendered back)
    return [[found[r][c] for c in sorted(found[r])][: MAX_RULE_CONDITIONS + 1] for r in sorted(found)][
        : MAX_RULES + 1
    ]


def raw_rules(rows: Rows) -> list[dict[str, Any]]:
    """The raw rules list the rows say (for ``targeting.parse``, the API's parser): a blank trait
    or value is left out, so the parser names it as missing; a number typed as text is sent as a
    number when it reads as one (else as the text, which the parser refuses in words)."""
    return [{"conditions": [_raw_condition(row) for row in rule]} for rule in rows]


def _raw_condition(row: Row) -> dict[str, Any]:
    raw: dict[str, Any] = {"operator": row.operator}
    trait = row.trait.strip()
    if trait:
        raw["trait"] = trait
    op = OPERATORS.get(row.operator)
    if op is None:
        return raw
    if op.kind is Kind.LIST:
        listed = split_values(row.values)
        if listed:
            raw["values"] = listed
    elif op.kind is Kind.BOOLEAN:
        flag = row.flag.strip().lower()
        raw["value"] = (
            True if flag in ("true", "yes", "1") else False if flag in ("false", "no", "0") else flag
        )
    elif op.kind is not Kind.PRESENCE:
        text = row.value.strip()
        if text:
            raw["value"] = _number(text) if op.kind is Kind.NUMBER else text
    if row.case and op.kind in CASE_KINDS:
        raw["case_insensitive"] = True
    return raw


def split_values(text: str) -> list[str]:
    """A list operand as typed: one value per line when there is a line break; else values
    separated by commas. Spaces around each are dropped, and empty ones."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = text.split("\n") if "\n" in text else text.split(",")
    return [part.strip() for part in parts if part.strip()]


def _number(text: str) -> object:
    cleaned = text.replace(" ", "").replace("\u00a0", "")
    if INT_RE.fullmatch(cleaned):
        return int(cleaned)
    if NUMBER_RE.fullmatch(cleaned):
        return float(cleaned)  # (1e999 reads as inf: the parser says "Enter a number")
    return text


# -- problems placed on the fields they name ---------------------------------------------------


def field_of(path: str) -> str | None:
    """The form field a parser problem names: ``rules[0].conditions[1].value`` -> ``r0c1_value``,
    ``rules[0].conditions`` -> ``r0`` (the rule), ``rules`` -> None (the card's top)."""
    match = PATH_RE.fullmatch(path)
    if match is None:
        return None
    rule, cond, part = match[1], match[2], match[3]
    if cond is None:
        return f"r{rule}"
    if part in ("trait", "operator"):
        return f"r{rule}c{cond}_{part}"
    if part == "case_insensitive":
        return f"r{rule}c{cond}_case"
    return f"r{rule}c{cond}_value"  # value, values, values[k], or the condition itself


def placed_errors(details: list[Detail]) -> FormErrors:
    """Each problem in plain words next to its field (the value of a list named by its place)."""
    errors = FormErrors()
    for item in details:
        path = str(item.get("field", ""))
        message = words(item)
        match = PATH_RE.fullmatch(path)
        if match is not None and match[4] is not None:
            message = f"Value {int(match[4]) + 1}: {message[0].lower()}{message[1:]}"
        errors.add(field_of(path), message)
    return errors


def where_words(path: str) -> str:
    """Where a problem is, for the count line: "rule 1, condition 2"."""
    match = PATH_RE.fullmatch(path)
    if match is None:
        return "the rules"
    if match[2] is None:
        return f"rule {int(match[1]) + 1}"
    return f"rule {int(match[1]) + 1}, condition {int(match[2]) + 1}"


# -- the card's context ---------------------------------------------------------------------


@dataclass
class Card:
    """What the Rules card shows: the saved rules in words, the builder's rows and problems, the
    audience line (computed, or fetched by htmx on load), a save to confirm."""

    segment: Segment
    rows: Rows
    errors: FormErrors = field(default_factory=FormErrors)
    audience: rule_matches.Audience | None = None
    audience_problem: str | None = None  # the typed rules do not parse: the first problem, briefly
    audience_slow: bool = False  # the count took too long
    counted: bool = False  # the audience line is filled in (else htmx fetches it on load)
    confirm: impact.Impact | None = None
    confirm_key: str = ""
    changed_since: bool = False
    editing: bool = False  # an action of the builder answered: open (else saved rules fold it away)
    focus: str | None = None  # the field that gets the cursor (autofocus): a row just added


@bp.app_template_global("saved_rule_words")
def saved_words(segment: Segment) -> list[str]:
    """The segment's saved rules in words, one line per rule."""
    if segment.rules is None:
        return []
    ruleset = rule_matches.ruleset_of(segment.rules)
    return [ruleset.explain(i) for i in range(len(ruleset))]


@bp.app_template_global()
def rules_card(segment: Segment) -> Card:
    """The card for a fresh page: the saved rules, their count fetched once the page has loaded."""
    return Card(segment, rows_of(segment.rules))


@bp.app_template_global()
def rules_reevaluation(segment: Segment) -> Any:
    """The segment's re-evaluation running now, if any (its progress polls itself)."""
    if segment.rules is None and not segment.rules_version:
        return None
    return bulk.unfinished(db.session, segment.id, OperationKind.REEVALUATE_RULES)


@bp.app_template_global()
def rule_operator_menu() -> list[tuple[str, list[tuple[str, str, str]]]]:
    return operator_menu()


@bp.app_template_global()
def rule_placeholders() -> dict[str, str]:
    return {kind.value: text for kind, text in PLACEHOLDERS.items()}


@bp.app_template_global()
def trait_key_options(prefix: str = "") -> list[str]:
    return rule_matches.trait_key_suggestions(db.session, prefix, KEY_SUGGESTIONS)


def counted(card: Card) -> Card:
    """The card with its audience line filled in: the count and sample of the typed rules, or
    their first problem, briefly."""
    card.counted = True
    if not card.rows:
        return card
    try:
        card.audience = rule_matches.audience(db.session, raw_rules(card.rows))
    except targeting.RulesInvalid as exc:
        first = exc.details[0] if exc.details else {}
        more = len(exc.details) - 1
        card.audience_problem = f"{where_words(str(first.get('field', ''))).capitalize()}: {words(first)}" + (
            f" (and {more} more {'problem' if more == 1 else 'problems'})" if more > 0 else ""
        )
        return card
    card.audience_slow = card.audience is None
    return card


# -- the builder's actions -------------------------------------------------------------------


def act(rows: Rows, action: str) -> tuple[Rows, str | None]:
    """The rows after an edit button (``add_condition:0`` ...), and a problem in words when the
    edit cannot be made (a limit reached)."""
    rows, problem, _ = act_and_focus(rows, action)
    return rows, problem


def act_and_focus(rows: Rows, action: str) -> tuple[Rows, str | None, str | None]:
    """``act``, and the field to put the cursor in afterwards (an added row's trait)."""
    rows, problem = _act(rows, action)
    verb, _, where = action.partition(":")
    if problem is None and verb == "add_rule" and rows:
        return rows, None, f"r{len(rows) - 1}c0_trait"
    if problem is None and verb == "add_condition" and where.isdigit() and int(where) < len(rows):
        i = int(where)
        return rows, None, f"r{i}c{len(rows[i]) - 1}_trait"
    return rows, problem, None


def _act(rows: Rows, action: str) -> tuple[Rows, str | None]:
    verb, _, where = action.partition(":")
    at = [int(part) for part in where.split(":") if part.isdigit() and len(part) < 4]
    rows = [list(rule) for rule in rows]
    if verb == "add_rule":
        if len(rows) >= MAX_RULES:
            return rows, f"A segment can have at most {MAX_RULES} rules."
        rows.append([Row()])
    elif verb == "add_condition" and len(at) == 1 and at[0] < len(rows):
        if len(rows[at[0]]) >= MAX_RULE_CONDITIONS:
            return rows, f"A rule can have at most {MAX_RULE_CONDITIONS} conditions."
        rows[at[0]].append(Row())
    elif verb == "remove_condition" and len(at) == 2 and at[0] < len(rows) and at[1] < len(rows[at[0]]):
        del rows[at[0]][at[1]]
        if not rows[at[0]]:
            del rows[at[0]]
    elif verb == "remove_rule" and len(at) == 1 and at[0] < len(rows):
        del rows[at[0]]
    elif verb == "clear":
        rows = []
    return rows, None


def _fingerprint(raw: object) -> str:
    """The rules a confirmation's numbers were computed for (a Confirm sent with other rules in
    the form is asked again with their numbers)."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def preview_rules(slug: str, raw: object) -> impact.Impact:
    """What saving these rules moves (``services.impact.preview_update`` with ``rules``: the users
    the re-evaluation will move, ``eventual``); the same 422 and 409 the save would answer."""
    return impact.preview_update(db.session, slug, rules=raw)


def _answer(card: Card, status: int = 200):
    """The card in place (htmx), or the whole segment page with the card as typed."""
    if is_htmx():
        return make_response(render_template(CARD, rules_state=card, segment=card.segment), status)
    html = render_template("segments/show.html", **{**page_context(card.segment), "rules_state": card})
    return make_response(html, status)


@bp.post("/segments/<slug>/rules")
@transactional
def edit_rules(slug: str):
    """Every button of the builder: an edit of the rows (the card again, as typed), a check (the
    rows' problems next to their fields), or a save — confirmed first with the numbers of what it
    moves when anyone leaves, against the catalog version those were computed on."""
    segment = live_segment(slug)
    form = request.form
    rows = rows_from_form(form)
    action = form.get("action", "")
    saving = action == "save" or bool(form.get("confirmed"))
    if not saving and action != "check":
        rows, limit, focus = act_and_focus(rows, action)
        card = Card(segment, rows, editing=True, focus=focus)
        if limit:
            card.errors.add(None, limit)
        return _answer(counted(card))
    raw = raw_rules(rows)
    try:
        targeting.parse(raw)
    except targeting.RulesInvalid as exc:
        return _answer(counted(Card(segment, rows, placed_errors(exc.details), editing=True)), 422)
    if action == "check":
        return _answer(counted(Card(segment, rows, editing=True)))
    return _save(segment, rows, raw if rows else None)


def _save(segment: Segment, rows: Rows, raw: list[dict[str, Any]] | None):
    form = request.form
    key = _fingerprint(raw)
    confirmed = confirmed_version(form)
    if confirmed is not None and form.get("confirmed_rules") != key:
        confirmed = None  # the rules changed since the numbers were shown: new numbers
    try:
        if confirmed is None:
            found = preview_rules(segment.slug, raw)
            if found.leaving:
                card = Card(segment, rows, confirm=found, confirm_key=key, editing=True)
                return _answer(counted(card))
        saved, changed = segments.update_segment(
            db.session, segment.slug, rules=raw, actor=dashboard_actor(), expected_version=confirmed
        )
    except AppError as exc:
        abandon()
        segment = live_segment(segment.slug)
        if catalog_moved(exc):
            found = preview_rules(segment.slug, raw)
            card = Card(segment, rows, confirm=found, confirm_key=key, changed_since=True, editing=True)
            return _answer(counted(card))
        errors = placed_errors(exc.details) if isinstance(exc, targeting.RulesInvalid) else FormErrors()
        if not errors:
            for item in exc.details or [{"message": exc.message}]:
                errors.add(None, words(item) if item.get("code") else plain(item.get("message")))
        return _answer(counted(Card(segment, rows, errors, editing=True)), 422)
    message = _saved_message(saved, changed, raw)
    back = url_for("web.show_segment", slug=saved.slug) + "#segment-rules"
    if not is_htmx():
        flash(message, "success")
        return redirect(back)
    card = Card(saved, rows_of(saved.rules))  # the builder folded again, its count fetched when opened
    body = render_template(CARD, rules_state=card, segment=saved)
    body += render_template("_flash_oob.html", messages=[("success", message)])
    response = make_response(body)
    response.headers["HX-Trigger"] = CHANGED
    return response


def _saved_message(segment: Segment, changed: bool, raw: object) -> str:
    if not changed:
        return "The rules are as they were: nothing to save."
    running = bulk.unfinished(db.session, segment.id, OperationKind.REEVALUATE_RULES)
    users = running.total if running is not None else 0
    if raw is None:
        return f"Rules removed: {segment.slug} answers by its rollout and explicit members again" + (
            f"; its rule matches of {users:,} users with traits are being cleared." if users else "."
        )
    who = f"{users:,} user with traits is" if users == 1 else f"{users:,} users with traits are"
    return f"Rules saved; {who} being evaluated against them."


@bp.post("/segments/<slug>/rules/audience")
def rules_audience(slug: str):
    """The live line under the builder: how many users with traits the typed rules match (of
    how many), a few of them, or what is wrong with the rules yet."""
    segment = live_segment(slug)
    card = counted(Card(segment, rows_from_form(request.form), editing=True))
    return render_template(CARD, rules_state=card, segment=segment, part="audience")


@bp.get("/segments/<slug>/rules/now")
def rules_now(slug: str):
    """The saved rules in words and their evaluation's progress, fetched again on
    ``segment-changed`` (the builder below them keeps what is typed)."""
    return render_template(CARD, segment=live_segment(slug), part="now")


@bp.get("/segments/<slug>/rules/trait-keys")
def rule_trait_keys(slug: str):
    """The trait keys seen so far that start with what is typed in a trait field (any
    ``*_trait`` parameter): the builder's ``<datalist>`` options."""
    typed = next((v for k, v in request.args.items() if k.endswith("_trait")), "")
    return render_template(CARD, part="keys", keys=trait_key_options(typed.strip()[:64]))
