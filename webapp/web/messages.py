"""Plain words for the dashboard.

The services speak to API clients: field names, formats, ranges (``slug must be ...``,
``user id must be between 1 and 9,223,372,036,854,775,807``, ``period must be YYYY-MM``).
The dashboard shows the same problems the way a product manager reads them, next to the field
they belong to. Everything a dashboard page shows of a service error passes through
:func:`plain` (messages) and :func:`form_errors` (field placement).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from webapp.errors import AppError
from webapp.rules import MAX_DESCRIPTION, is_slug

SLUG_WORDS = "Use upper-case letters, digits and underscores, starting with a letter (at most 64 characters)"
USER_ID_WORDS = "User ids are whole numbers from 1 up, like 1001"

Rule = tuple[re.Pattern[str], Callable[[re.Match[str], str], str] | str]


def upper_slug(value: str) -> str | None:
    """The upper-case form of a slug typed in lower case, when that is a valid slug."""
    upper = value.strip().upper()
    return upper if value.strip() != upper and is_slug(upper) else None


def _slug_problem(match: re.Match[str], value: str) -> str:
    return "Slugs are written in upper case." if upper_slug(value) else SLUG_WORDS + "."


RULES: list[Rule] = [
    (re.compile(r"^slug must be a string$"), SLUG_WORDS + "."),
    (re.compile(r"^slug must be "), _slug_problem),
    (re.compile(r"^user id must be a positive integer$|^user id must be an integer$"), USER_ID_WORDS + "."),
    (
        re.compile(r"^user id must be between"),
        "That number is too large to be a user id. " + USER_ID_WORDS + ".",
    ),
    (
        re.compile(r"^(?:user_id is )?required(?: for a user report)?$|^user_id is required"),
        "Enter the user's id.",
    ),
    (re.compile(r"^no such segment$"), "There is no such segment."),
    (
        re.compile(r"^a live segment has this slug$|^segment (\S+) already exists$"),
        lambda m, v: f"A segment called {m[1] or v} already exists: choose another slug.",
    ),
    (re.compile(r"^segment (\S+) does not exist$"), lambda m, v: f"There is no segment called {m[1]}."),
    (
        re.compile(r"^(?:rollout_percent )?must be a number between 0 and 100$"),
        "Enter a percentage from 0 to 100.",
    ),
    (
        re.compile(r"^(?:rollout_percent )?at most two decimal places$"),
        "Use at most two decimal places, like 12.5 or 0.25.",
    ),
    (
        re.compile(r"^description: at most|^at most \d+ characters$"),
        f"A description can be at most {MAX_DESCRIPTION:,} characters long.",
    ),
    (
        re.compile(r"^description must not contain NUL|^contains a NUL character$"),
        "The description contains a character that cannot be stored (a NUL byte).",
    ),
    (re.compile(r"^description must be a string$|^must be a string$"), "Enter the description as text."),
    (
        re.compile(r"^give ttl_seconds or expires_at, not both$"),
        "Choose either an expiry period or a date and time, not both.",
    ),
    (
        re.compile(r"^must be between 1 and \d+$|^not one of the choices$|^choose a TTL"),
        "Choose an expiry period from the list.",
    ),
    (re.compile(r"^must be an integer$"), "Choose an expiry period from the list."),
    (
        re.compile(r"^must be in the future$"),
        "The expiry time has already passed: choose a time in the future.",
    ),
    (re.compile(r"^must be within ten years$"), "The expiry time must be within ten years from now."),
    (re.compile(r"^must include a timezone"), "Enter the expiry as a date and time."),
    (
        re.compile(r"^not a date$|^expiry must be a date and time$|^must be an ISO 8601 date"),
        "Enter the expiry as a date and time.",
    ),
    (
        re.compile(r"^must be between 0001-01-01 and 9999-12-31 in UTC$"),
        "That date is out of range: choose a date between the years 1 and 9999 (UTC).",
    ),
    (
        re.compile(r"^must be YYYY-MM$|^period must be|^required unless from and to|^give period"),
        "Choose a month.",
    ),
    (re.compile(r"^unknown kind$|^kind must be one of"), "Choose what the report is about."),
    (
        re.compile(r"^does not match the slug$|^type the slug to confirm$"),
        "Type the segment's slug exactly as shown (upper case) to confirm.",
    ),
    (
        re.compile(r"^contains a NUL$|^the search must not contain NUL"),
        "The search contains a character that cannot be searched for.",
    ),
    (re.compile(r"^give at least one slug in add or del$"), "Choose a segment."),
    (re.compile(r"^slug listed twice in (?:add|del)$"), "That segment is listed twice."),
    (re.compile(r"^slug is in both add and del$"), "That segment is both added and removed."),
    (re.compile(r"^user_ids must not be empty$|^empty list$"), "Paste user ids or choose a file."),
    (
        re.compile(r"^no such report$|^not a report id$"),
        "There is no such report (it may have been deleted).",
    ),
    (re.compile(r"^no such operation$"), "There is no such bulk operation."),
    (
        re.compile(r"^report is (\w+), not ready for download$"),
        lambda m, v: f"The report is {m[1]}: it can be downloaded once it is finished.",
    ),
]

# Left-overs in messages no rule matched: field names and notation become words.
WORDS = [
    (re.compile(r"\buser_ids\b"), "user ids"),
    (re.compile(r"\buser_id\b"), "user id"),
    (re.compile(r"\brollout_percent\b"), "rollout percentage"),
    (re.compile(r"\bttl_seconds\b"), "expiry period"),
    (re.compile(r"\bexpires_at\b"), "expiry time"),
    (re.compile(r"\b(?:add|del)\[\d+\]\s*"), ""),
    (re.compile(r"\s*\(1\.\.2\^63-1\)"), ""),
    (re.compile(r"\^\[[^\s]*\$?"), "the required form"),
]


def plain(message: object, value: str = "") -> str:
    """A service or form message in plain words, starting with a capital and ending with a stop."""
    text = str(message or "").strip()
    for pattern, replacement in RULES:
        match = pattern.search(text)
        if match:
            text = replacement(match, value) if callable(replacement) else replacement
            break
    else:
        for pattern, words in WORDS:
            text = pattern.sub(words, text)
    return sentence(text)


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

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str | None, message: str) -> None:
        target = self.general if name is None else self.fields.setdefault(name, [])
        if message and message not in target:
            target.append(message)

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
        value = str(item.get("slug") or item.get("value") or values.get(name, "") or "")
        if item.get("message") == "no such segment" and (item.get("slug") or item.get("value")):
            message = (
                "Slugs are written in upper case."
                if upper_slug(value)
                else f"There is no segment called {value}."
            )
        else:
            message = plain(item.get("message", ""), value)
        if name in names and upper_slug(value) and "upper case" in message:
            result.suggestions[name] = upper_slug(value) or ""
        result.add(name if name in names else None, message)
    if not result:
        result.add(None, plain(exc.message))
    return result
