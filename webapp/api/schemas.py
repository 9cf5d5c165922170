"""Request and response models of the JSON API (pydantic v2, strict types).

Strict ints reject booleans and numeric strings; unknown fields are rejected so a typo
(``ttl`` instead of ``ttl_seconds``) is an error, not a silently ignored field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from webapp.config import Config
from webapp.models.enums import (
    Action,
    OperationKind,
    ReportKind,
    ReportStatus,
    SegmentEventKind,
    Source,
    TraitAction,
    TraitImportMode,
)
from webapp.rules import (
    INT64_MAX,
    MAX_BULK_IDS,
    MAX_DESCRIPTION,
    MAX_ITEMS_PER_CHANGE,
    MAX_LOOKUP_IDS,
    MAX_RULE_CONDITIONS,
    MAX_RULE_STRING,
    MAX_RULE_VALUES,
    MAX_RULES,
    MAX_SLUG_INPUT,
    MAX_TRAIT_INTEGER,
    MAX_TRAIT_STRING,
    MAX_TRAITS_PER_USER,
    MAX_TTL_SECONDS,
    MAX_USER_ID,
    SLUG_HELP,
    SLUG_PATTERN,
    TRAIT_KEY_HELP,
    TRAIT_KEY_PATTERN,
    in_utc,
    problem_code,
)
from webapp.services import targeting

# -- JSON schema fragments -----------------------------------------------------------------
#
# The OpenAPI document states every rule of a request that a JSON schema can state, so that a
# schema-valid request is accepted (schemathesis checks it) and a client can validate before
# sending. Most of these rules are checked by the services, in their own words, not by
# pydantic: the fragments below are attached with ``WithJsonSchema`` / ``json_schema_extra``,
# which describe without validating. What no JSON schema can state (a segment that exists, an
# expiry in the future, ``from`` before ``to``, a slug listed once across ``add`` and ``del``)
# is in the descriptions.

SLUG_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{SLUG_PATTERN}$",
    "maxLength": 64,
    "description": SLUG_HELP,
    "examples": ["AVITO_VOICE_MESSAGES"],
}
USER_ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID}
# 0..100 with at most two decimals (rollout.percent_to_basis_points); JSON "12.34" is a
# multiple of 0.01 (validators compare decimals, so 0.29 passes and 0.1 + 0.2 does not).
PERCENT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 100},
        {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01},
    ],
    "description": "0..100, at most two decimals",
    "examples": [12.5],
}
# datetime.fromisoformat reads every RFC 3339 date-time but a lowercase "z", a leap second
# (":60") and year 0, and converted to UTC it must stay within years 1..9999: an offset ahead of
# UTC on 0001-01-01, or behind it on 9999-12-31, may not, so those are left out. (pydantic, for
# expires_at, reads a lowercase "z" too.)
DATE_TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^(?!0000-)(?!.{17}60)(?!0001-01-01.[^+]*\+(?!00:00))(?!9999-12-31.[^-]*-(?!00:00))[^z]*$",
}
DATE_SCHEMA: dict[str, Any] = {"type": "string", "format": "date", "pattern": "^(?!0000-)"}
# An ISO 8601 date (as midnight UTC) or an RFC 3339 date-time.
MOMENT_SCHEMA: dict[str, Any] = {"anyOf": [DATE_SCHEMA, DATE_TIME_SCHEMA], "examples": ["2026-11-01"]}
# A month YYYY-MM from 1970-01 to 9998-12 (reports.parse_period).
YEAR_PATTERN = "(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
MONTH_PATTERN = f"{YEAR_PATTERN}-(?:0[1-9]|1[0-2])"
PERIOD_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^{MONTH_PATTERN}$", "examples": ["2026-11"]}
NULL: dict[str, Any] = {"type": "null"}
NO_NUL_PATTERN = "^[^\\u0000]*$"  # PostgreSQL text cannot hold one


# A segment's rules (issue 29; webapp.services.targeting): a list of rules (OR), each a list of
# conditions (AND). The shape only: what an operand must read as (a version, a date) and the
# total of listed values are the language's to judge (422 naming every problem).
CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["trait", "operator"],
    "additionalProperties": False,
    "properties": {
        "trait": {"type": "string", "pattern": f"^{TRAIT_KEY_PATTERN}$", "description": "a trait key"},
        "operator": {"enum": sorted(targeting.OPERATORS)},
        "value": {
            "type": ["string", "number", "boolean"],
            "description": "the operand of a scalar operator (a string, number, version, date or boolean "
            "as the operator reads it)",
        },
        "values": {
            "type": "array",
            "items": {"type": "string", "maxLength": MAX_RULE_STRING},
            "maxItems": MAX_RULE_VALUES,
            "description": "the list of str_in / str_not_in",
        },
        "case_insensitive": {"type": "boolean"},
    },
}
RULES_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "array",
            "maxItems": MAX_RULES,
            "items": {
                "type": "object",
                "required": ["conditions"],
                "additionalProperties": False,
                "properties": {
                    "conditions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_RULE_CONDITIONS,
                        "items": CONDITION_SCHEMA,
                    }
                },
            },
        },
        {"type": "null"},
    ],
    "description": "rules over users' traits: a user matches when every condition of some rule holds "
    "(AND inside a rule, OR across rules); members are explicit members, or users whose stored traits "
    "match and whose bucket is in the rollout (100% unless rollout_percent says otherwise on creation). "
    "Each operand must read as its operator says (a version such as 5.2.1, an ISO 8601 date); every "
    "problem is named (422). null removes the rules.",
    "examples": [
        [
            {
                "conditions": [
                    {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                    {"trait": "plan", "operator": "str_eq", "value": "paid"},
                ]
            }
        ]
    ],
}
Rules = Annotated[Any, WithJsonSchema(RULES_SCHEMA)]


def one_non_empty(*names: str) -> dict[str, Any]:
    """``anyOf``: at least one of these arrays is given with an item."""
    return {"anyOf": [{"required": [name], "properties": {name: {"minItems": 1}}} for name in names]}


def _utc(value: datetime) -> datetime:
    """rules.in_utc as a pydantic validator: the field's own 422 (never an overflow later)."""
    try:
        return in_utc(value)
    except ValueError as exc:
        raise PydanticCustomError(problem_code(exc, "datetime_range"), str(exc)) from None


# A date-time with an offset, converted to UTC as it is read (rules.in_utc).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


def exact_int(value: object) -> object:
    """A JSON number that is an integer (``27269415.0``, which JSON Schema's ``integer`` admits)
    as that int, exactly; a number with a fraction (``1.5``), NaN or infinity is refused. Other
    values go on to the strict int check (which refuses booleans and strings)."""
    if type(value) is float:
        if not value.is_integer():
            raise PydanticCustomError(
                "int_from_float", "must be an integer, not {value}", {"value": str(value)}
            )
        value = int(value)
    if type(value) is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise PydanticCustomError("int_range", "must be a 64-bit integer")
    return value


# An integer wherever the schema says integer: strict (no booleans, no strings), but a JSON
# number without a fraction is one whichever way it is written; 64 bits, as the schema says.
# (Bounds go before the validator, so that the JSON schema states them as minimum/maximum.)
Int = Annotated[StrictInt, Field(ge=-INT64_MAX - 1, le=INT64_MAX), BeforeValidator(exact_int)]


def _user_id(value: object) -> int:
    """A user id (services.common.user_id_problem's words), integer-valued numbers included.
    Each item of a list is judged on its own, so every bad one is named (by its index)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 1 <= value <= MAX_USER_ID:
        return value
    given = {"value": str(value)[:40]}  # named in the error's detail, as the services do
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("user_id_invalid", "user id must be an integer", given)
    raise PydanticCustomError("user_id_out_of_range", f"user id must be between 1 and {MAX_USER_ID:,}", given)


Percent = Annotated[Union[StrictInt, StrictFloat], WithJsonSchema(PERCENT_SCHEMA)]
# The slug rule is the services' (plain-words errors); pydantic only caps the length.
Slug = Annotated[StrictStr, Field(max_length=MAX_SLUG_INPUT), WithJsonSchema(SLUG_SCHEMA)]
UserId = Annotated[int, PlainValidator(_user_id), WithJsonSchema(USER_ID_SCHEMA)]
Ttl = Annotated[
    StrictInt, Field(ge=1, le=MAX_TTL_SECONDS, description="seconds from now"), BeforeValidator(exact_int)
]
Description = Annotated[
    StrictStr,
    Field(max_length=MAX_DESCRIPTION),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_DESCRIPTION,
            "pattern": NO_NUL_PATTERN,
            "description": "no NUL characters",
        }
    ),
]
ExpiresAt = Annotated[
    UtcDatetime, WithJsonSchema({**DATE_TIME_SCHEMA, "description": "in the future, within ten years"})
]
# ttl_seconds or expires_at, not both (a null one is not given)
EXPIRY: dict[str, Any] = {
    "not": {
        "required": ["ttl_seconds", "expires_at"],
        "properties": {"ttl_seconds": {"type": "integer"}, "expires_at": {"type": "string"}},
    }
}


def change_items(**alias: str) -> Any:
    """A user change's ``add`` or ``del`` list, in both APIs: unique items, at most
    MAX_ITEMS_PER_CHANGE, none by default."""
    return Field(
        default_factory=list,
        max_length=MAX_ITEMS_PER_CHANGE,
        json_schema_extra={"uniqueItems": True},
        **alias,  # type: ignore[call-overload]
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------


class SegmentCreate(Strict):
    slug: Slug
    description: Description | None = None
    rollout_percent: Percent | None = None
    exclusion_group: Slug | None = Field(
        None, description="the exclusion group to join (created on first use)"
    )
    rules: Rules = None


class SegmentPatch(Strict):
    description: Description | None = None
    rollout_percent: Percent | None = None
    exclusion_group: Slug | None = Field(
        None, description="move into this exclusion group; null leaves its group"
    )
    rules: Rules = None


class ScheduleRequest(Strict):
    at: UtcDatetime = Field(description="when the change takes effect (future, within a year)")
    rollout_percent: Percent


class LookupRequest(Strict):
    user_ids: list[UserId] = Field(
        min_length=1,
        max_length=MAX_LOOKUP_IDS,
        description=f"1 to {MAX_LOOKUP_IDS} user ids; answers keep their order",
    )


class AddItem(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=EXPIRY)

    slug: Slug
    ttl_seconds: Ttl | None = None
    expires_at: ExpiresAt | None = None


class UserSegmentsChange(Strict):
    """At least one slug in ``add`` or ``del``, each slug once across both (every slug must
    name a live segment); ``ttl_seconds`` or ``expires_at`` (not both) is the default expiry of
    the added segments, an ``add`` item's own overrides it. At most 1000 items in ``add`` and
    ``del`` together."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={**one_non_empty("add", "del"), **EXPIRY}
    )

    add: list[Union[Slug, AddItem]] = change_items()
    delete: list[Slug] = change_items(alias="del")
    ttl_seconds: Ttl | None = None
    expires_at: ExpiresAt | None = None


class BulkMembers(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=EXPIRY)

    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BULK_IDS)
    ttl_seconds: Ttl | None = None
    expires_at: ExpiresAt | None = None


class BulkAddMembers(BulkMembers):
    """The users to add, with an optional expiry; ``skip_conflicts`` for a segment in an
    exclusion group."""

    skip_conflicts: StrictBool = Field(
        False,
        description=(
            "in an exclusion group, users already in another segment of the group refuse the whole "
            "add (409 `group_occupied`); true leaves them out instead (counted as `skipped`, in the "
            "answer, the operation and the segment's activity) and adds the others"
        ),
    )


ReportFormat = Literal["csv", "spreadsheet"]
Separator = Literal[",", ";"]
FORMAT_FIELD = Field(
    None,
    description='the file\'s format. "csv" (the default): the API\'s own, unchanged: ";"-separated, '
    'ISO 8601 times, no BOM. "spreadsheet" (opt-in, what the dashboard asks for): UTF-8 with a '
    "BOM, the chosen separator, CRLF line ends, times YYYY-MM-DD HH:MM:SS UTC, the history's reason and "
    "actor columns (members: source), and a file name unique to the report",
    examples=["spreadsheet"],
)
SEPARATOR_FIELD = Field(
    None,
    description='with format "spreadsheet" only: "," (the default) or ";" (the list separator of '
    "spreadsheets in locales with a decimal comma)",
    examples=[";"],
)


# A separator belongs to the spreadsheet format (reports.file_format): absent, or with it.
SEPARATOR_RULE: dict[str, Any] = {
    "anyOf": [
        {"properties": {"separator": {"type": "null"}}},
        {"required": ["format"], "properties": {"format": {"const": "spreadsheet"}}},
    ]
}


def _report_rules() -> dict[str, Any]:
    """Which fields each kind of report needs (reports.request_report), as ReportRequest says."""

    def given(**schemas: dict[str, Any]) -> dict[str, Any]:  # present and matching
        return {"required": list(schemas), "properties": schemas}

    def absent(*names: str) -> dict[str, Any]:  # absent or null
        return {"properties": dict.fromkeys(names, NULL)}

    def both(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
        return {
            "required": first.get("required", []) + second.get("required", []),
            "properties": {**first["properties"], **second["properties"]},
        }

    history_kind = {
        "anyOf": [
            given(kind={"const": "user_history"}, user_id=USER_ID_SCHEMA),
            both(absent("kind", "segment"), given(user_id=USER_ID_SCHEMA)),
            given(kind={"const": "all_history"}),
            absent("kind", "segment", "user_id"),
        ]
    }
    history_range = {
        "anyOf": [
            both(given(period=PERIOD_SCHEMA), absent("from", "to")),
            both(absent("period"), given(**{"from": MOMENT_SCHEMA, "to": MOMENT_SCHEMA})),
        ]
    }
    kinds = {
        "anyOf": [
            given(kind={"const": "segment_members"}, segment=SLUG_SCHEMA),
            both(absent("kind"), given(segment=SLUG_SCHEMA)),
            {"allOf": [history_kind, history_range]},
        ]
    }
    return {"allOf": [kinds, SEPARATOR_RULE]}


class ReportRequest(Strict):
    """``kind`` defaults to ``segment_members`` with a ``segment``, else ``user_history`` with a
    ``user_id``, else ``all_history``. A history report takes ``period`` or both ``from`` and
    ``to`` (``from`` before ``to``). Fields a kind does not use are ignored (but still typed)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_report_rules())

    kind: ReportKind | None = None
    user_id: Int | None = Field(None, description="a user_history report's user")
    segment: Annotated[StrictStr, Field(max_length=MAX_SLUG_INPUT)] | None = Field(
        None, description="a segment_members report's segment", examples=["AVITO_VOICE_MESSAGES"]
    )
    period: Annotated[StrictStr, Field(max_length=7)] | None = Field(
        None,
        description="a history report's month, YYYY-MM: the current month or an earlier one (a month "
        "to come is refused)",
        examples=["2026-11"],
    )
    start: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None,
        alias="from",
        description="a history report's start: ISO 8601 date or date-time (inclusive)",
        examples=["2026-11-01"],
    )
    end: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None,
        alias="to",
        description="a history report's end: ISO 8601 date or date-time (exclusive)",
        examples=["2026-12-01"],
    )
    format: ReportFormat | None = FORMAT_FIELD
    separator: Separator | None = SEPARATOR_FIELD


class MembersExport(Strict):
    """A CSV of the segment's members now that are a list of users (explicit members; in rule
    mode, rule members too, with a ``source`` column); the format as for ``POST /reports``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=SEPARATOR_RULE)

    format: ReportFormat | None = FORMAT_FIELD
    separator: Separator | None = SEPARATOR_FIELD


# Query models only document: the views parse their query strings themselves (helpers.query_int,
# query_time), with these bounds.
MAX_PAGE = 1_000_000  # helpers.page_args


class SegmentListQuery(BaseModel):
    q: Annotated[str, WithJsonSchema({"type": "string", "pattern": NO_NUL_PATTERN})] = Field(
        "", description="substring of slug or description (its first 200 characters)"
    )
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(Config.PER_PAGE_DEFAULT, ge=1, le=Config.PER_PAGE_MAX)


class ActivityQuery(BaseModel):
    limit: int = Field(50, ge=1, le=500)
    before: int = Field(MAX_USER_ID, ge=1, le=MAX_USER_ID, description="an entry id: older entries only")


class MembersQuery(BaseModel):
    after: int = Field(
        0, ge=0, le=MAX_USER_ID, description="keyset cursor: the last user_id of the previous page"
    )
    limit: int = Field(100, ge=1, le=1000)


Moment = Annotated[str | None, WithJsonSchema(MOMENT_SCHEMA)]


class HistoryQuery(BaseModel):
    start: Moment = Field(None, alias="from", description="ISO 8601 date or date-time (inclusive), before to")
    end: Moment = Field(None, alias="to", description="ISO 8601 date or date-time (exclusive)")


class DeletedOut(BaseModel):
    slug: str
    deleted: bool
    members_removed: int
    operation_url: str | None = Field(
        None, description="status of the background removal of many members' rows"
    )


# -- responses -----------------------------------------------------------------------------


class SegmentOut(BaseModel):
    slug: str
    description: str
    rollout_percent: float
    created_at: datetime
    exclusion_group: str | None = None
    member_count: int | None = None
    excluded_count: int | None = None
    rules: list[dict[str, Any]] | None = Field(None, description="its rules (canonical form), null for none")
    answers_by_rules: bool = Field(
        False,
        description="rule members are read from their evaluation (false while a segment's first rules "
        "are being evaluated: it answers by its rollout until every user with traits is)",
    )
    rules_matching: int | None = Field(
        None, description="users with traits whom the rules match, before the rollout (GET only)"
    )
    reevaluation: OperationOut | None = Field(
        None,
        description="the re-evaluation of its users running since its rules, rollout or group last "
        "changed; until it reaches a user, the user is answered as the previous evaluation had it",
    )


class ScheduleOut(BaseModel):
    id: int
    at: datetime
    rollout_percent: float
    status: Literal["pending", "applied", "cancelled"]
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None = None


class ScheduleList(BaseModel):
    segment: str
    items: list[ScheduleOut]


class ActivityOut(BaseModel):
    id: int
    kind: SegmentEventKind
    occurred_at: datetime
    actor: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: Any) -> ActivityOut:
        """One activity entry (a ``segment_events`` row) as the API answers it."""
        return cls(
            id=event.id,
            kind=SegmentEventKind(event.kind),
            occurred_at=event.occurred_at,
            actor=event.actor,
            detail=event.detail,
        )


class ActivityList(BaseModel):
    segment: str
    items: list[ActivityOut]
    next_before: int | None = Field(None, description="pass back as ``before`` for older entries")


class DeletedSegmentOut(BaseModel):
    """A deleted segment: when and by whom, what its deletion kept, whether it can be restored."""

    slug: str
    description: str
    deleted_at: datetime
    deleted_by: str
    rollout_percent: float = Field(description="its rollout when it was deleted")
    exclusion_group: str | None = Field(description="its exclusion group when it was deleted")
    kept_members: int = Field(description="explicit memberships kept for a restore")
    excluded_count: int
    restorable_until: datetime
    restorable: bool = Field(description="a restore would be accepted now")
    problem: str | None = Field(
        description="why not: restore_expired, slug_taken_since, not_restorable, deletion_in_progress"
    )
    taken_by: str | None = Field(None, description="the live segment that has the slug now")
    activity: list[ActivityOut] = Field(description="its latest 50 activity entries, newest first")


class RestoredOut(BaseModel):
    segment: SegmentOut
    members_restored: int = Field(description="explicit memberships back now, or coming back (operation_url)")
    expired_while_deleted: int = Field(
        description="kept memberships whose expiry passed while it was deleted"
    )
    excluded_count: int
    rollout_percent: float
    wanted_percent: float = Field(description="its rollout when it was deleted")
    restored_at_zero: bool = Field(
        description="its exclusion group had no room for its rollout: restored at 0%"
    )
    operation_url: str | None = Field(None, description="the background restore of many members")


class GroupSegmentOut(BaseModel):
    slug: str
    rollout_percent: float
    buckets: list[list[int]] = Field(description="[start, end) bucket ranges of 10,000, in allocation order")


class GroupOut(BaseModel):
    name: str
    used_percent: float
    free_percent: float
    segments: list[GroupSegmentOut]


class GroupList(BaseModel):
    items: list[GroupOut]


class LookupOut(BaseModel):
    users: list[UserSegments]


class SegmentList(BaseModel):
    items: list[SegmentOut]
    page: int
    per_page: int
    total: int


class ActiveSegmentOut(BaseModel):
    slug: str
    source: Source
    expires_at: datetime | None


class UserSegments(BaseModel):
    user_id: int
    segments: list[ActiveSegmentOut]


class ChangeOut(BaseModel):
    user_id: int
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    not_members: list[str]
    segments: list[ActiveSegmentOut]


class MemberOut(BaseModel):
    user_id: int
    added_at: datetime
    expires_at: datetime | None


class MemberList(BaseModel):
    segment: str
    items: list[MemberOut]
    next_after: int | None


class BulkOut(BaseModel):
    segment: str
    received: int
    added: int
    updated: int
    unchanged: int
    skipped: int = Field(
        0, description="skip_conflicts: listed users left out, already in another segment of the group"
    )


class OperationOut(BaseModel):
    id: str
    kind: OperationKind
    segment: str | None = Field(description="the segment (null for a trait import)")
    mode: TraitImportMode | None = Field(None, description="a trait import: each line replaces or merges")
    status: ReportStatus
    total: int
    done: int
    progress: int
    added: int
    updated: int
    removed: int = Field(0, description="bulk remove and replace: users who left")
    skipped: int = Field(
        0,
        description="bulk add with skip_conflicts: listed users left out, already in another segment of the group",
    )
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    status_url: str


class CauseOut(BaseModel):
    """The change a history entry is credited to."""

    kind: Literal[
        "change",
        "traits",
        "rules_changed",
        "created",
        "rollout",
        "rules",
        "group",
        "schedule",
        "deleted",
        "restored",
    ] = Field(
        description="change: a stored change of this user (its reason says which: api, "
        "dashboard, ttl, segment_deleted, restored); traits: the user's traits changed (``keys``: "
        "which; ``at``, ``actor``: that trait change) and with them whether the segment's rules "
        "cover the user (reason rule); the others are changes of a segment: rules_changed (its "
        "rules given or changed), created (with rules), rollout (its percentage), rules (it began "
        "or stopped answering by its rules), group (a move into or out of an exclusion group), "
        "schedule (a scheduled change falling due), deleted, restored. An entry with reason rule "
        "credited to a segment's change was written when the re-evaluation reached the user: its "
        "``occurred_at`` is then, the cause's ``at`` the change"
    )
    segment: str = Field(description="the segment that changed (a group's other segments move with it)")
    at: datetime
    actor: str
    from_percent: float | None = None
    to_percent: float | None = None
    from_group: str | None = None
    to_group: str | None = None
    schedule_id: int | None = Field(None, description="kind schedule: the scheduled change's id")
    keys: list[str] | None = Field(
        None, description="kind traits: the trait keys set or deleted (never values)"
    )


class HistoryEntryOut(BaseModel):
    segment: str
    operation: Action
    occurred_at: datetime
    reason: str
    actor: str
    cause: CauseOut | None = Field(None, description="the change this entry is credited to")


class HistoryOut(BaseModel):
    user_id: int
    start: datetime | None = Field(serialization_alias="from")
    end: datetime | None = Field(serialization_alias="to")
    items: list[HistoryEntryOut]


class ErrorDetail(BaseModel):
    """One problem: the ``field`` it is about, English ``message`` (may be reworded), stable
    ``code`` naming the kind of problem (``unknown_segment``, ``group_full``, ...) and the
    parameters of this one (``slug``, ``max_percent``, ...) as further keys."""

    model_config = ConfigDict(extra="allow")

    field: str
    message: str
    code: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorOut(BaseModel):
    error: ErrorBody


class ReportOut(BaseModel):
    id: str
    kind: str
    params: dict
    status: ReportStatus
    progress: int
    rows: int
    size_bytes: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    status_url: str
    download_url: str | None


# -- bulk remove and replace ---------------------------------------------------------------


class BulkRemoveMembers(Strict):
    """The users to take out of the segment (each as a per-user ``del`` would)."""

    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BULK_IDS)


class BulkReplaceMembers(BulkMembers):
    """After it, the segment's explicit members are exactly ``user_ids``, all with this expiry
    (``ttl_seconds`` or ``expires_at``, or none)."""


class BulkRemoveOut(BaseModel):
    segment: str
    received: int
    removed: int
    not_members: int = Field(description="distinct listed ids that were not in the segment")


class BulkReplaceOut(BaseModel):
    segment: str
    received: int
    added: int
    updated: int = Field(description="listed members whose expiry changed")
    removed: int
    unchanged: int


# -- impact before change (issue 24) -------------------------------------------------------


class UpdateImpact(Strict):
    """PATCH /segments/<slug>'s change: ``rollout_percent``, ``exclusion_group`` (null: none)
    and/or ``rules`` (null: none)."""

    change: Literal["update"]
    rollout_percent: Percent | None = None
    exclusion_group: Slug | None = Field(None, description="the group to be in; null: none")
    rules: Rules = None


class ScheduleImpact(Strict):
    """POST .../schedule's step, counted today."""

    change: Literal["schedule"]
    at: UtcDatetime = Field(description="when the change takes effect (future, within a year)")
    rollout_percent: Percent


class DeleteImpact(Strict):
    """DELETE /segments/<slug>."""

    change: Literal["delete"]


class RestoreImpact(Strict):
    """POST /segments/<slug>/restore (the most recently deleted segment with the slug)."""

    change: Literal["restore"]


class RemoveImpact(Strict):
    """DELETE .../members."""

    change: Literal["remove"]
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BULK_IDS)


class ReplaceImpact(BulkMembers):
    """PUT .../members."""

    change: Literal["replace"]


class ImpactRequest(
    RootModel[
        Annotated[
            Union[UpdateImpact, ScheduleImpact, DeleteImpact, RestoreImpact, RemoveImpact, ReplaceImpact],
            Field(discriminator="change"),
        ]
    ]
):
    """A change to preview, as its own route takes it, named by ``change``."""


class MoveOut(BaseModel):
    slug: str
    leaving: int
    joining: int


class ImpactOut(BaseModel):
    segment: str
    change: str
    catalog_version: int = Field(
        description="send it back as ?catalog_version= with the change: 409 impact_changed once the "
        "segments changed since"
    )
    known_users: int = Field(description="ids seen in memberships, exclusions or history")
    leaving: int = Field(description="history entries `removed` the change would write now, all segments")
    joining: int = Field(description="history entries `added` the change would write now, all segments")
    moves: list[MoveOut] = Field(description="each segment whose membership moves, this one first")
    seconds: float = Field(description="how long the computation took")
    eventual: bool = Field(
        False,
        description="true for a change that re-evaluates a rule segment: its users move as the "
        "background re-evaluation reaches them, and the numbers are the moves once it has reached "
        "everyone (counted now)",
    )


# -- user traits (issue 29; the rules: webapp.rules, checked by services.traits) -------------

TRAIT_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_TRAIT_STRING, "pattern": NO_NUL_PATTERN},
        {"type": "number", "minimum": -MAX_TRAIT_INTEGER, "maximum": MAX_TRAIT_INTEGER},
        {"type": "boolean"},
    ]
}


def _traits_schema(merge: bool) -> dict[str, Any]:
    value = {"anyOf": [*TRAIT_VALUE_SCHEMA["anyOf"], NULL]} if merge else TRAIT_VALUE_SCHEMA
    return {
        "type": "object",
        "maxProperties": MAX_TRAITS_PER_USER,
        "propertyNames": {"pattern": f"^{TRAIT_KEY_PATTERN}$", "description": TRAIT_KEY_HELP},
        "additionalProperties": value,
        "description": f"at most {MAX_TRAITS_PER_USER} keys ({TRAIT_KEY_HELP}); values are strings (at most "
        f"{MAX_TRAIT_STRING} characters), numbers within ±(2^53 - 1) or booleans"
        + ("; null deletes the key" if merge else ""),
        "examples": [{"country": "RU", "plan": "paid", "app_version": "5.2.1", "age": 31, "beta": True}],
    }


class TraitsPut(Strict):
    """The user's traits become exactly ``traits`` (keys not given are deleted)."""

    traits: Annotated[Any, WithJsonSchema(_traits_schema(False))]


class TraitsPatch(Strict):
    """``traits`` merged into the user's: each key given is set, ``null`` deletes it, others stay.
    The result holds at most 100 keys (422 ``too_many_traits``)."""

    traits: Annotated[Any, WithJsonSchema(_traits_schema(True))]


class TraitsOut(BaseModel):
    user_id: int
    traits: dict[str, Any] = Field(json_schema_extra={"additionalProperties": TRAIT_VALUE_SCHEMA})
    updated_at: datetime | None = Field(description="when they last changed; null: the user has no traits")


class TraitsChangeOut(TraitsOut):
    set_keys: list[str] = Field(description="keys this write added or gave another value")
    deleted_keys: list[str] = Field(description="keys this write removed")


class TraitImportQuery(BaseModel):
    mode: TraitImportMode = Field(
        description="replace: each line's traits become the user's (as PUT); merge: they are merged "
        "into the user's (as PATCH)"
    )


class TraitHistoryEntryOut(BaseModel):
    keys: list[str] = Field(description="the keys that changed (never their values)")
    action: TraitAction = Field(
        description="set: keys added or given another value; deleted: keys removed; cleared: every trait "
        "of the user removed (keys: those they had)"
    )
    actor: str
    occurred_at: datetime
    operation: str | None = Field(None, description="the trait import that made it, if one did")


class TraitHistoryOut(BaseModel):
    user_id: int
    start: datetime | None = Field(serialization_alias="from")
    end: datetime | None = Field(serialization_alias="to")
    items: list[TraitHistoryEntryOut]


SegmentOut.model_rebuild()  # (its reevaluation: an OperationOut, defined below it)
