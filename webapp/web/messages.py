"""Plain words for the dashboard.

The services speak to API clients: field names, formats, ranges (``slug must be ...``,
``user id must be between 1 and 9,223,372,036,854,775,807``, ``period must be YYYY-MM``).
Every problem they report (an error's ``details``, errors.detail) also carries a stable
``code`` and its parameters (``group_full`` with ``exclusion_group``, ``max_percent``,
``free_percent``). The dashboard words a problem from :data:`WORDING`, a table keyed by code,
the way a product manager reads it, next to the field it belongs to; the services' English
is never parsed, so rewording a service message cannot change a page. A code without an
entry (or with ``None``: the service's words are written for the dashboard already, as the
id list parser's are) shows the service's message as a sentence. Everything a dashboard page
shows of a service error passes through :func:`words` (one problem), :func:`error_words`
(an error page or fragment) and :func:`form_errors` (field placement).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from webapp.errors import AppError
from webapp.rules import is_slug, problem_code

SLUG_WORDS = "Use upper-case letters, digits and underscores, starting with a letter (at most 64 characters)"
USER_ID_WORDS = "User ids are whole numbers from 1 up, like 1001"
GROUP_WORDS = (
    "Group names use upper-case letters, digits and underscores, starting with a letter "
    "(like DISCOUNTS), at most 64 characters."
)
CHANGE_TIME_WORDS = "Choose the date and time of the change."


def upper_slug(value: str) -> str | None:
    """The upper-case form of a slug typed in lower case, when that is a valid slug."""
    upper = value.strip().upper()
    return upper if value.strip() != upper and is_slug(upper) else None


def moment_text(iso_text: str) -> str:
    """An ISO 8601 moment as the dashboard shows one (``2026-11-01 10:00 UTC``)."""
    try:
        return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso_text


def _num(value: object) -> str:
    return f"{float(str(value)):g}"


# A problem in words: from the detail (its code's parameters, its field) and what was typed in
# the form's field, if anything. A plain string is the wording whatever the parameters.
Wording = Callable[[Mapping[str, Any], str], str] | str | None


def _slug_words(d: Mapping[str, Any], typed: str) -> str:
    return "Slugs are written in upper case." if upper_slug(typed) else SLUG_WORDS + "."


def _group_name_words(d: Mapping[str, Any], typed: str) -> str:
    upper = upper_slug(typed)
    return f"Group names are written in upper case: {upper}." if upper else GROUP_WORDS


def _unknown_segment_words(d: Mapping[str, Any], typed: str) -> str:
    if upper_slug(typed):
        return "Slugs are written in upper case."
    return f"There is no segment called {typed}." if typed else "There is no such segment."


def _group_full_words(d: Mapping[str, Any], typed: str) -> str:
    """The most this segment can have in its group, with the two numbers that make it up (what
    it holds already and what is free) so that they add up: 80% = 30% held + 50% free."""
    group = d.get("exclusion_group")
    try:
        ceiling, free = float(str(d.get("max_percent"))), float(str(d.get("free_percent")))
    except ValueError:
        return f"Group {group} has no room for that: its segments share 100% of users."
    if ceiling <= 0:
        return (
            f"Group {group} is full: no room is free for this segment (its segments share 100% "
            f"of users). Lower another segment of {group} first, or choose another group."
        )
    holds = round(ceiling - free, 2)
    parts = f"it holds {holds:g}%, {free:g}% is free" if holds > 0 else f"{free:g}% is free"
    return (
        f"Group {group}: at most {ceiling:g}% for this segment ({parts}); its segments share "
        f"100% of users. To go higher, lower another segment of {group} first."
    )


def _schedule_wont_fit_words(d: Mapping[str, Any], typed: str) -> str:
    return (
        f"Group {d.get('exclusion_group')} would not have room for the change of {d.get('slug')} "
        f"scheduled for {moment_text(str(d.get('at')))}: its segments share 100% of users. "
        "Choose a lower percentage or cancel that change."
    )


def _group_overlap_words(d: Mapping[str, Any], typed: str) -> str:
    return (
        f"{int(d.get('users') or 0):,} users are explicit members of this segment and of "
        f"{d.get('segment')}, which is in group {d.get('exclusion_group')}: a user can be in "
        "only one segment of a group. Remove them from one of the two first."
    )


def _group_occupied_words(d: Mapping[str, Any], typed: str) -> str:
    where = f"{d.get('segment')}, which shares exclusion group {d.get('exclusion_group')}"
    return f"Already in {where}." if "user_id" in d else f"The user is already in {where}."


RULE_DATE_WORDS = "Enter a date, such as 2026-11-01 or 2026-11-01T10:00:00+03:00."


def _date_words(outside: str) -> Wording:
    """A date that could not be used: the scheduled change's time (field ``at``), a rule's date
    (``rules[0].conditions[1].value``) or an expiry."""

    def wording(d: Mapping[str, Any], typed: str) -> str:
        where = str(d.get("field", ""))
        return (
            CHANGE_TIME_WORDS if where == "at" else RULE_DATE_WORDS if where.startswith("rules[") else outside
        )

    return wording


def _required_words(d: Mapping[str, Any], typed: str) -> str:
    return {
        "user_id": "Enter the user's id.",
        "slug": "Choose a segment.",
        "segment": "Enter the segment's slug.",
        "period": "Choose a month.",
    }.get(str(d.get("field", "")).split("[")[0], sentence(str(d.get("message", ""))))


def _period_future_words(d: Mapping[str, Any], typed: str) -> str:
    period = str(d.get("period") or "")
    try:
        label = datetime.strptime(period, "%Y-%m").strftime("%B %Y")
    except ValueError:
        label = "That month"
    return f"{label} has not started yet: choose this month or an earlier one."


EXPIRY_FROM_LIST = "Choose an expiry period from the list."
EXPIRY_AS_DATE = "Enter the expiry as a date and time."

WORDING: dict[str, Wording] = {
    # user traits (services/traits)
    "file_type_invalid": "Upload the file as JSON lines (.jsonl) or CSV (.csv).",
    "too_many_traits": lambda d, typed: f"A user can hold at most {d.get('max')} traits.",
    # segment rules over traits (services/targeting; the rule builder words each field's problem)
    "rules_not_list": "The rules could not be read: they must be a list of rules.",
    "too_many_rules": lambda d, typed: f"A segment can have at most {d.get('max')} rules.",
    "rule_not_object": "This rule could not be read.",
    "unknown_field": lambda d, typed: f"This rule has a field it does not know: {d.get('key')}.",
    "conditions_missing": "Add at least one condition to this rule.",
    "conditions_not_list": "This rule's conditions could not be read.",
    "conditions_empty": "Add at least one condition to this rule.",
    "too_many_conditions": lambda d, typed: f"A rule can have at most {d.get('max')} conditions.",
    "condition_not_object": "This condition could not be read.",
    "trait_missing": "Choose a trait.",
    "trait_invalid": (
        "A trait name has letters, digits, _ . and - only, starts with a letter or _, and is at most 64 long."
    ),
    "operator_missing": "Choose how to compare.",
    "operator_unknown": "Choose how to compare from the list.",
    "case_insensitive_not_boolean": "Ignoring case is either on or off.",
    "case_insensitive_not_allowed": "Ignoring case applies to text comparisons only.",
    "value_missing": "Enter a value to compare with.",
    "value_not_allowed": "This comparison takes no value here.",
    "values_missing": "Enter at least one value.",
    "values_not_list": "The values could not be read.",
    "values_empty": "Enter at least one value.",
    "too_many_values": lambda d, typed: f"A list can have at most {int(d.get('max') or 0):,} values.",
    "too_many_values_in_all": lambda d, typed: (
        f"A segment's rules can list at most {int(d.get('max') or 0):,} values in all."
    ),
    "value_not_string": "Enter text.",
    "value_not_number": "Enter a number, such as 18 or 4.5.",
    "value_not_boolean": "Choose true or false.",
    "number_not_finite": "Enter a number, such as 18 or 4.5.",
    "number_out_of_range": "This number is too large.",
    "string_too_long": lambda d, typed: f"Enter at most {d.get('max')} characters.",
    "string_nul": "The text contains a character that cannot be stored (NUL).",
    "string_invalid": "The text contains a character that is not valid text.",
    "version_invalid": "Enter a version, such as 5.2, 5.2.1 or 1.0.0-beta.2.",
    # webhooks
    "invalid_webhook_url": "Enter the receiver's address, starting with https:// (or http://).",
    "webhook_url_refused": lambda d, typed: (
        "Enter a web address starting with https:// (or http://)."
        if d.get("reason") == "url"
        else "Webhooks are only sent to public addresses: this one is on a private, loopback or internal network."
    ),
    "unknown_event_type": "Choose at least one event to send.",
    "too_many_subscriptions": lambda d, typed: (
        f"There are already {d.get('limit')} webhooks: remove one first."
    ),
    "unknown_subscription": "This webhook no longer exists.",
    "unknown_delivery": "This delivery no longer exists.",
    "link_invalid": "This download link is invalid or has expired: ask for the report again.",
    # slugs, segments, groups
    "slug_invalid": _slug_words,
    "unknown_segment": _unknown_segment_words,
    "slug_taken": lambda d, typed: (
        f"A segment called {d.get('slug') or typed} already exists: choose another slug."
    ),
    "slug_twice": "That segment is listed twice.",
    "in_both_lists": "That segment is both added and removed.",
    "nothing_to_change": "Choose a segment.",
    "too_many_items": lambda d, typed: f"At most {int(d.get('max') or 0):,} segments can be changed at once.",
    "group_name_invalid": _group_name_words,
    "unknown_group": lambda d, typed: f"There is no exclusion group called {d.get('value') or typed}.",
    "group_full": _group_full_words,
    "impact_changed": (
        "The segments changed since these numbers were computed: the new numbers are shown. "
        "Check them and confirm again."
    ),
    "group_overlap": _group_overlap_words,
    "no_deleted_segment": lambda d, typed: f"No segment called {d.get('slug') or typed} was deleted.",
    "slug_taken_since": lambda d, typed: (
        f"A newer segment called {d.get('segment')} was created on {moment_text(str(d.get('created_at')))}: "
        f"the deleted one cannot come back under the same slug. Delete the newer one first if it should."
    ),
    "restore_expired": lambda d, typed: (
        f"It was deleted on {moment_text(str(d.get('deleted_at')))}: deleted segments can be restored for "
        f"{int(d.get('days') or 0)} days, until {moment_text(str(d.get('restorable_until')))}."
    ),
    "not_restorable": "It was deleted before restores existed (or its members were purged): it cannot be restored.",
    "deletion_in_progress": lambda d, typed: (
        f"Its members are still being removed ({int(d.get('done') or 0):,} of {int(d.get('total') or 0):,}): "
        "restore it once that has finished."
    ),
    "rules_with_schedule": lambda d, typed: (
        f"Cancel its {int(d.get('schedules') or 0)} scheduled rollout change(s) before giving it rules."
        if d.get("schedules")
        else "A segment with rules takes no scheduled changes: change its rollout now instead."
    ),
    "restore_in_progress": lambda d, typed: (
        f"Its members are still coming back from a restore ({int(d.get('done') or 0):,} of "
        f"{int(d.get('total') or 0):,}): delete it once that has finished."
    ),
    "already_restored": "It has been restored already.",
    "group_occupied": _group_occupied_words,
    "search_nul": "The search contains a character that cannot be searched for.",
    # settings
    "description_not_string": "Enter the description as text.",
    "description_nul": "The description contains a character that cannot be stored (a NUL byte).",
    "description_too_long": lambda d, typed: (
        f"A description can be at most {int(d.get('max') or 0):,} characters long."
    ),
    "percent_invalid": "Enter a percentage from 0 to 100.",
    "percent_precision": "Use at most two decimal places, like 12.5 or 0.25.",
    # users and ids
    "user_id_invalid": USER_ID_WORDS + ".",
    "user_id_out_of_range": "That number is too large to be a user id. " + USER_ID_WORDS + ".",
    "required": _required_words,
    "user_ids_empty": "Paste user ids or choose a file.",
    "too_many_ids": lambda d, typed: (
        f"More than {int(d.get('max') or 0):,} ids: split the list and add it in parts."
    ),
    "id_token_invalid": None,  # the id list parser's words (services.id_lists) are the dashboard's
    "file_not_text": None,
    "file_empty": None,
    "file_no_ids": None,
    "id_column_unclear": None,
    # expiry and dates
    "expiry_both": "Choose either an expiry period or a date and time, not both.",
    "ttl_invalid": EXPIRY_FROM_LIST,
    "ttl_out_of_range": EXPIRY_FROM_LIST,
    "expiry_past": "The expiry time has already passed: choose a time in the future.",
    "expiry_too_far": "The expiry time must be within ten years from now.",
    "date_invalid": _date_words(EXPIRY_AS_DATE),
    "date_naive": _date_words(EXPIRY_AS_DATE),
    "date_out_of_range": _date_words(
        "That date is out of range: choose a date between the years 1 and 9999 (UTC)."
    ),
    # scheduled changes
    "schedule_past": "That time has passed: choose a time in the future.",
    "schedule_too_far": "A change can be scheduled at most a year ahead.",
    "schedule_wont_fit": _schedule_wont_fit_words,
    "unknown_schedule": "There is no such scheduled change (it may have been cancelled already).",
    "schedule_in_force": "That change is already in force: it can no longer be cancelled.",
    # reports and bulk operations
    "period_invalid": "Choose a month.",
    "period_required": "Choose a month.",
    "period_and_range": "Choose a month.",
    "period_future": _period_future_words,
    "range_reversed": "The start must be before the end.",
    "report_kind_invalid": "Choose what the report is about.",
    "report_format_invalid": "Choose a file format from the list.",
    "separator_invalid": "Choose commas or semicolons to separate the columns.",
    "unknown_report": "There is no such report (it may have been deleted).",
    "report_not_ready": lambda d, typed: (
        f"The report is {d.get('status')}: it can be downloaded once it is finished."
    ),
    "seed_date_invalid": None,
    "unknown_operation": "There is no such bulk operation.",
    "mode_invalid": "Choose whether to remove these ids or replace the members with them.",
    "not_confirmed": "Preview the change and confirm it first.",
    "preview_stale": "The ids or the expiry changed since the preview: preview the change again.",
}

# Codes whose wording offers the upper-case form of what was typed (a slug or group name).
UPPER_CASE_OFFERS = frozenset({"slug_invalid", "unknown_segment", "group_name_invalid"})


def words(item: Mapping[str, Any], typed: str = "") -> str:
    """One problem (an error detail) in plain words, by its code; ``typed``: what was typed in
    its field, when the wording offers a correction of it. A code without wording shows the
    service's message."""
    wording = WORDING.get(str(item.get("code", "")))
    if wording is None:
        return sentence(str(item.get("message", "")))
    return sentence(wording if isinstance(wording, str) else wording(item, typed))


def problem_words(exc: ValueError, field: str = "") -> str:
    """A rule's ValueError (rules.Invalid) in plain words, by its code."""
    return words({"field": field, "code": problem_code(exc, ""), "message": str(exc)})


def _typed(item: Mapping[str, Any], fallback: str = "") -> str:
    return str(item.get("slug") or item.get("value") or fallback or "")


def error_words(message: object, details: Iterable[Mapping[str, Any]] | None) -> tuple[str, list[str]]:
    """An error page's (or fragment's) headline and the lines below it: an error of one problem
    is that problem in words; otherwise its message, then each problem once."""
    problems = [d for d in details or [] if not d.get("offer")]
    texts: list[str] = []
    for item in problems:
        text = words(item, _typed(item))
        if text and text not in texts:
            texts.append(text)
    headline = texts[0] if len(problems) == 1 else sentence(str(message or ""))
    return headline, [text for text in texts if text != headline]


def plain(message: object) -> str:
    """A message that carries no code (a job's stored error) as a sentence."""
    return sentence(str(message or ""))


def sentence(text: str) -> str:
    """Starts with a capital, ends with a stop (for messages already in plain words)."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?:)" else text + "."


@dataclass
class FormErrors:
    """Where each problem of a failed form goes: next to its field, or (when it belongs to no
    field of the form) once at the top. ``fields``: messages per field; ``headlines``: a line
    above a field's list; ``suggestions``: a value to offer instead (a slug in upper case)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    headlines: dict[str, str] = field(default_factory=dict)
    suggestions: dict[str, str] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # field -> (url, words): "Open X"

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str | None, message: str) -> None:
        target = self.general if name is None else self.fields.setdefault(name, [])
        if message and message not in target:
            target.append(message)

    def merge(self, other: FormErrors) -> None:
        for name, messages in other.fields.items():
            for message in messages:
                self.add(name, message)
        for message in other.general:
            self.add(None, message)
        self.headlines.update(other.headlines)
        self.suggestions.update(other.suggestions)
        self.links.update(other.links)

    def flat(self) -> str:
        """Every message once, on one line (the flash of a no-JS post)."""
        parts = [*self.general]
        for name, messages in self.fields.items():
            parts += [self.headlines[name]] if name in self.headlines else []
            parts += messages[:20] + ([f"… and {len(messages) - 20:,} more."] if len(messages) > 20 else [])
        return " ".join(parts)

    def get(self, name: str, default: object = None) -> object:  # templates: errors.get('slug')
        return self.fields.get(name, default)


def form_errors(
    exc: AppError,
    form_fields: Iterable[str],
    aliases: Mapping[str, str] | None = None,
    values: Mapping[str, str] | None = None,
) -> FormErrors:
    """Place ``exc``'s details on the form's fields (``add[0]`` -> ``add``, then ``aliases``,
    e.g. ``{"add": "slug"}``); a detail of no field of the form, or an error without details,
    becomes one general message. ``values``: what was typed, per form field."""
    names, aliases, values = set(form_fields), aliases or {}, values or {}
    result = FormErrors()
    for item in exc.details:
        raw = str(item.get("field", "")).split("[")[0]
        name = aliases.get(raw, raw)
        typed = _typed(item, values.get(name, ""))
        message = words(item, typed)
        if name in names and item.get("code") in UPPER_CASE_OFFERS and upper_slug(typed):
            result.suggestions[name] = upper_slug(typed) or ""
        result.add(name if name in names else None, message)
    if not result:
        result.add(None, plain(exc.message))
    return result
