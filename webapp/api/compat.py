"""Seed-compatible API: the paths and shapes of the Go service Segments replaces.

Thin adapters over the same services as /api/v1; differences are listed in the README.
"""
from __future__ import annotations

from typing import Annotated

from flask import Blueprint, request, url_for
from pydantic import BaseModel, Field, StrictInt

from webapp.api.docs import operation
from webapp.api.helpers import actor, json_body, out
from webapp.api.schemas import ChangeOut, DeletedOut, Slug, Strict
from webapp.api.users import change_out
from webapp.errors import ValidationFailed, detail
from webapp.extensions import db
from webapp.models.enums import Reason, ReportStatus
from webapp.rules import MAX_ITEMS_PER_CHANGE, MAX_TTL_DAYS
from webapp.services import reports, segments, user_changes
from webapp.services.common import parse_user_id
from webapp.services.read_path import hot_read
from webapp.services.user_changes import AddSpec
from webapp.transaction import transactional

bp = Blueprint("api_compat", __name__)
TAGS = ("compat",)


class CompatSegment(Strict):
    slug: Slug


class CompatUserChange(Strict):
    model_config = {"extra": "forbid", "populate_by_name": True}

    user_id: StrictInt
    add: list[Slug] = Field(default_factory=list, max_length=MAX_ITEMS_PER_CHANGE)
    delete: list[Slug] = Field(default_factory=list, alias="del", max_length=MAX_ITEMS_PER_CHANGE)
    ttl_days: Annotated[StrictInt, Field(ge=1, le=MAX_TTL_DAYS)] | None = None


class CompatSlug(BaseModel):
    slug: str


class CompatUserSegments(BaseModel):
    user_id: int
    segments: list[CompatSlug]


class CompatUserQuery(BaseModel):
    id: int


class CompatReportQuery(BaseModel):
    date: str = Field(description="YYYY-MM")
    user_id: int | None = None


class CompatTask(BaseModel):
    task_id: str


class CompatTaskQuery(BaseModel):
    task_id: str


class CompatTaskStatus(BaseModel):
    status: str
    link_to_file: str


@bp.post("/segment")
@operation(tags=TAGS, json=CompatSegment, ok=(201, CompatSlug))
@transactional
def create_segment():
    body = json_body(CompatSegment)
    segment = segments.create_segment(db.session, body.slug)
    return out(CompatSlug(slug=segment.slug), 201)


@bp.delete("/segment")
@operation(tags=TAGS, json=CompatSegment, ok=(200, DeletedOut))
@transactional
def delete_segment():
    body = json_body(CompatSegment)
    left = segments.delete_segment(db.session, body.slug, actor=actor())
    return out(DeletedOut(slug=body.slug, deleted=True, members_removed=left))


@bp.post("/segment/user")
@operation(tags=TAGS, json=CompatUserChange, ok=(200, ChangeOut))
@transactional
def change_user():
    body = json_body(CompatUserChange)
    ttl = body.ttl_days * 86_400 if body.ttl_days else None
    result = user_changes.change_user_segments(db.session, body.user_id, [AddSpec(s) for s in body.add],
                                               body.delete, ttl_seconds=ttl, reason=Reason.API, actor=actor())
    return out(change_out(result))


@bp.get("/segment/user")
@operation(tags=TAGS, query=CompatUserQuery, ok=(200, CompatUserSegments))
def user_segments():
    uid = parse_user_id(request.args.get("id", ""), "id")
    active = hot_read(db.session, uid)
    return out(CompatUserSegments(user_id=uid, segments=[CompatSlug(slug=a.slug) for a in active]))


@bp.get("/report")
@operation(tags=TAGS, query=CompatReportQuery, ok=(200, CompatTask))
@transactional
def request_report():
    user = request.args.get("user_id")
    report = reports.request_report(db.session, user_id=parse_user_id(user) if user else None,
                                    period=request.args.get("date", ""))
    return out(CompatTask(task_id=str(report.id)))


@bp.get("/report_check")
@operation(tags=TAGS, query=CompatTaskQuery, ok=(200, CompatTaskStatus))
def report_check():
    task_id = request.args.get("task_id", "")
    if not task_id:
        raise ValidationFailed("task_id is required", [detail("task_id", "required")])
    report = reports.get_report(db.session, task_id)
    link = url_for("api.download_report", report_id=report.id, _external=True) if report.status == ReportStatus.FINISHED else ""
    return out(CompatTaskStatus(status=report.status, link_to_file=link))
