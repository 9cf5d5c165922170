"""Request and response models of the JSON API (pydantic v2, strict types).

Strict ints reject booleans and numeric strings; unknown fields are rejected so a typo
(``ttl`` instead of ``ttl_seconds``) is an error, not a silently ignored field.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from webapp.models.enums import Action, OperationKind, ReportKind, ReportStatus, Source
from webapp.rules import MAX_BULK_IDS, MAX_DESCRIPTION, MAX_ITEMS_PER_CHANGE, MAX_SLUG_INPUT, MAX_TTL_SECONDS

Percent = Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=100, examples=[12.5])]
Slug = Annotated[StrictStr, Field(max_length=MAX_SLUG_INPUT, examples=["AVITO_VOICE_MESSAGES"])]
Ttl = Annotated[StrictInt, Field(ge=1, le=MAX_TTL_SECONDS, description="seconds from now")]
Description = Annotated[StrictStr, Field(max_length=MAX_DESCRIPTION)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------

class SegmentCreate(Strict):
    slug: Slug
    description: Description | None = None
    rollout_percent: Percent | None = None


class SegmentPatch(Strict):
    description: Description | None = None
    rollout_percent: Percent | None = None


class AddItem(Strict):
    slug: Slug
    ttl_seconds: Ttl | None = None
    expires_at: AwareDatetime | None = None


class UserSegmentsChange(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    add: list[Union[Slug, AddItem]] = Field(default_factory=list, max_length=MAX_ITEMS_PER_CHANGE)
    delete: list[Slug] = Field(default_factory=list, alias="del", max_length=MAX_ITEMS_PER_CHANGE)
    ttl_seconds: Ttl | None = None
    expires_at: AwareDatetime | None = None


class BulkMembers(Strict):
    user_ids: list[StrictInt] = Field(min_length=1, max_length=MAX_BULK_IDS)
    ttl_seconds: Ttl | None = None
    expires_at: AwareDatetime | None = None


class ReportRequest(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: ReportKind | None = None
    user_id: StrictInt | None = None
    segment: Slug | None = None
    period: Annotated[StrictStr, Field(max_length=7, examples=["2026-11"])] | None = None
    start: Annotated[StrictStr, Field(max_length=40, examples=["2026-11-01"])] | None = Field(None, alias="from")
    end: Annotated[StrictStr, Field(max_length=40, examples=["2026-12-01"])] | None = Field(None, alias="to")


class SegmentListQuery(BaseModel):
    q: str | None = Field(None, description="substring of slug or description")
    page: int = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)


class MembersQuery(BaseModel):
    after: int = Field(0, ge=0, description="keyset cursor: the last user_id of the previous page")
    limit: int = Field(100, ge=1, le=1000)


class HistoryQuery(BaseModel):
    start: str | None = Field(None, alias="from", description="ISO 8601 date or datetime (inclusive)")
    end: str | None = Field(None, alias="to", description="ISO 8601 date or datetime (exclusive)")


class DeletedOut(BaseModel):
    slug: str
    deleted: bool
    members_removed: int
    operation_url: str | None = Field(None, description="status of the background removal of many members' rows")


# -- responses -----------------------------------------------------------------------------

class SegmentOut(BaseModel):
    slug: str
    description: str
    rollout_percent: float
    created_at: datetime
    member_count: int | None = None
    excluded_count: int | None = None


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


class OperationOut(BaseModel):
    id: str
    kind: OperationKind
    segment: str
    status: ReportStatus
    total: int
    done: int
    progress: int
    added: int
    updated: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    status_url: str


class HistoryEntryOut(BaseModel):
    segment: str
    operation: Action
    occurred_at: datetime
    reason: str
    actor: str


class HistoryOut(BaseModel):
    user_id: int
    start: datetime | None = Field(serialization_alias="from")
    end: datetime | None = Field(serialization_alias="to")
    items: list[HistoryEntryOut]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict]


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
