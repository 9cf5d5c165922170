"""Seed-compatible API: the paths, shapes and status codes of the Go service Segments replaces.

Thin adapters over the same services as /api/v1; the remaining differences (deliberate bug
fixes) are listed in the README. Status codes are the seed's: 200 (204 for a user without
segments), 400 for every invalid request (never 422), 404 for an unknown segment or task, 409
for an existing segment or a report that is not ready; every error is the JSON envelope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Response, request, url_for
from pydantic import BaseModel, BeforeValidator, Field, StrictInt, WithJsonSchema
from spectree import Response as SpecResponse
from werkzeug.exceptions import MethodNotAllowed

from webapp.api.docs import CsvResponses, operation
from webapp.api.helpers import actor, consistency_token, json_body, out, reader, report_reader
from webapp.api.hot_routes import SEED_USER_SEGMENTS
from webapp.api.schemas import (
    MONTH_PATTERN,
    YEAR_PATTERN,
    ChangeOut,
    DeletedOut,
    ErrorBody,
    ErrorOut,
    Slug,
    Strict,
    UserId,
    change_items,
    exact_int,
    one_non_empty,
)
from webapp.api.segments import deleted_out
from webapp.api.users import change_out
from webapp.errors import AppError, Conflict, NotFound, ValidationFailed, detail
from webapp.http.auth import REPORTS, requires_scope, token_name
from webapp.http.error_answers import error_response
from webapp.http.transaction import transactional
from webapp.models import Report
from webapp.models.enums import Reason, ReportStatus
from webapp.platform.extensions import db, report_requests, spec
from webapp.rules import MAX_TTL_DAYS, MAX_USER_ID
from webapp.services.common import parse_user_id
from webapp.services.history import reports
from webapp.services.membership import bulk, user_changes
from webapp.services.membership.user_changes import AddSpec
from webapp.services.segments import lifecycle as segments

bp = Blueprint("api_compat", __name__)
TAGS = ("compat",)
SEED_PATHS = frozenset({"/segment", "/segment/user", "/report", "/report_check", "/download"})
SeedStatus = Literal["progress", "success", "fail"]
SEED_STATUS: dict[str, SeedStatus] = {
    ReportStatus.QUEUED: "progress",
    ReportStatus.RUNNING: "progress",
    ReportStatus.FINISHED: "success",
    ReportStatus.FAILED: "fail",
}


# -- models ------------------------------------------------------------------------------------


class CompatSegment(Strict):
    slug: Slug


class CompatUserChange(Strict):
    """At least one slug in ``add`` or ``del``, each slug once across both, every slug a live
    segment; at most 1000 in ``add`` and ``del`` together."""

    model_config = {
        "extra": "forbid",
        "populate_by_name": True,
        "json_schema_extra": one_non_empty("add", "del"),
    }

    user_id: UserId
    add: list[Slug] = change_items()
    delete: list[Slug] = change_items(alias="del")
    ttl_days: Annotated[StrictInt, Field(ge=1, le=MAX_TTL_DAYS), BeforeValidator(exact_int)] | None = None


class CompatSlug(BaseModel):
    slug: str


class CompatUserSegments(BaseModel):
    user_id: int
    segments: list[CompatSlug]


class CompatUserQuery(BaseModel):
    id: int = Field(ge=1, le=MAX_USER_ID)


# reports.request_seed_report: a moment YYYY-MM-DD HH:MM (a real one: no 02-30, no 24:00) or a
# month YYYY-MM, years 1970 to 9998.
_DAY = (
    "(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # days 1-28 of any month
    "|(?:0[13-9]|1[0-2])-(?:29|30)"  # 29 and 30 but in February
    "|(?:0[13578]|1[02])-31"
)  # 31 in the long months
_LEAP_YEAR = (
    "(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)"
)
SEED_DATE_PATTERN = (
    f"^(?:(?:{YEAR_PATTERN}-(?:{_DAY})|{_LEAP_YEAR}-02-29) (?:[01][0-9]|2[0-3]):[0-5][0-9]|{MONTH_PATTERN})$"
)


class CompatReportQuery(BaseModel):
    date: Annotated[str, WithJsonSchema({"type": "string", "pattern": SEED_DATE_PATTERN})] = Field(
        description=f"{reports.SEED_DATE_HELP}: the history from that moment until now (a month: that month)",
        examples=["2023-08-29 10:32", "2023-08"],
    )
    user_id: int | None = Field(None, ge=1, le=MAX_USER_ID, description="extension: one user's history only")


class CompatTask(BaseModel):
    task_id: str


TaskId = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]  # any other string: 404


class CompatTaskQuery(BaseModel):
    task_id: TaskId


class CompatDownloadQuery(BaseModel):
    id: TaskId = Field(description="the task_id")


class CompatTaskStatus(BaseModel):
    status: SeedStatus
    link_to_file: str = Field(description='"" until the report is ready, then <base>/download?id=<task_id>')


# -- OpenAPI: the seed's status codes ----------------------------------------------------------


def seed_operation(
    *,
    errors: tuple[str, ...],
    ok: tuple[int, type] | None = None,
    json: type | None = None,
    query: type | None = None,
    no_content: bool = False,
    csv: bool = False,
):
    """:func:`operation` with exactly the seed's status codes.

    spectree adds its own request-validation 422 to every operation it documents; these routes
    never answer 422 (their validation errors are 400), so the responses ``operation``
    registered are replaced by ``ok`` and ``errors`` (the error envelope) only, plus what
    ``operation`` cannot state: a 204 without a body (``no_content``), a CSV 200 (``csv``).
    """
    register = operation(tags=TAGS, ok=ok, json=json, query=query, errors=errors)

    def document(view):
        view = register(view)
        codes: dict[str, Any] = {code: ErrorOut for code in errors}
        if ok is not None:
            codes[f"HTTP_{ok[0]}"] = ok[1]
        bodiless = ("HTTP_204",) if no_content else ()
        responses = CsvResponses("HTTP_200", **codes) if csv else SpecResponse(*bodiless, **codes)
        responses.bind_model_adapter(spec.model_adapter)
        metadata = spec.get_function_metadata(view)
        assert metadata is not None
        metadata.resp = responses
        return view

    return document


# The error statuses, per route (401 only when API_TOKENS is set; 429: rate limits; a mutating
# call's 409 also covers an Idempotency-Key still in flight; 415: a body not sent as JSON).
READ = ("HTTP_400", "HTTP_401", "HTTP_429")
WRITE = ("HTTP_400", "HTTP_401", "HTTP_409", "HTTP_415", "HTTP_429")


@bp.errorhandler(AppError)
def seed_error(exc: AppError) -> Response:
    """The seed answers 400 for every invalid request: no 422 here (validation, an
    Idempotency-Key reused for another request); other statuses as they are."""
    return error_response(400 if exc.status == 422 else exc.status, exc.code, exc.message, exc.details)


@bp.before_app_request
def seed_method_not_allowed() -> Response | None:
    """A 405 on these paths in the envelope too. Werkzeug's 405 is raised before any blueprint
    is known, and these paths are not under /api/, so it would get the dashboard's HTML error
    page; this hook runs first (app-wide, one attribute check) and answers JSON, with Allow."""
    exc = request.routing_exception
    if not isinstance(exc, MethodNotAllowed) or request.path not in SEED_PATHS:
        return None
    body = ErrorOut(error=ErrorBody(code="method_not_allowed", message=exc.description or "", details=[]))
    return out(body, 405, {"Allow": ", ".join(sorted(exc.valid_methods or ()))})


# -- routes ------------------------------------------------------------------------------------


@bp.post("/segment")
@seed_operation(json=CompatSegment, ok=(200, CompatSlug), errors=WRITE)
@transactional
def create_segment():
    """Create a segment: 200 ``{"slug"}``; 409 when it exists."""
    body = json_body(CompatSegment)
    segment = segments.create_segment(db.session, body.slug)
    return out(CompatSlug(slug=segment.slug))


@bp.delete("/segment")
@seed_operation(json=CompatSegment, ok=(200, DeletedOut), errors=(*WRITE, "HTTP_404"))
@transactional
def delete_segment():
    """Delete a segment (its members leave it, with history); 404 when there is none."""
    body = json_body(CompatSegment)
    return out(deleted_out(body.slug, *bulk.delete_segment(db.session, body.slug, actor=actor())))


@bp.post("/segment/user")
@seed_operation(json=CompatUserChange, ok=(200, ChangeOut), errors=WRITE)
@transactional
def change_user():
    """Add and remove one user's segments atomically, ``ttl_days`` for the added ones."""
    body = json_body(CompatUserChange)
    ttl = body.ttl_days * 86_400 if body.ttl_days else None
    result = user_changes.change_user_segments(
        db.session,
        body.user_id,
        [AddSpec(s) for s in body.add],
        body.delete,
        ttl_seconds=ttl,
        reason=Reason.API,
        actor=actor(),
    )
    return out(change_out(result))


@SEED_USER_SEGMENTS.route(bp)
@seed_operation(query=CompatUserQuery, ok=(200, CompatUserSegments), no_content=True, errors=READ)
def user_segments():
    """A user's active segments; 204 (no body) when there are none."""
    uid = parse_user_id(request.args.get("id", ""), "id")
    body = reader().answer(uid, compat=True, token=consistency_token())  # (as in front of Flask)
    return Response(body, mimetype="application/json") if body else Response(status=204)


@bp.get("/report")
@requires_scope(REPORTS)
@seed_operation(query=CompatReportQuery, ok=(200, CompatTask), errors=READ)
@report_requests
@transactional
def request_report():
    """Queue a CSV of every user's history from ``date`` until now; an identical request still
    pending returns the same ``task_id``."""
    user = request.args.get("user_id")
    report = reports.request_seed_report(
        db.session,
        request.args.get("date", ""),
        user_id=parse_user_id(user) if user else None,
        requested_by=token_name() or "",
    )
    return out(CompatTask(task_id=str(report.id)))


def _task(name: str) -> Report:
    """The report a query parameter names: 400 when it is missing, 404 when there is none (or,
    with API_TOKENS, when another client requested it, as on /api/v1)."""
    task_id = request.args.get(name, "")
    if not task_id:
        raise ValidationFailed(f"{name} is required", [detail(name, "required", code="required")])
    return reports.get_report(db.session, task_id, report_reader())


@bp.get("/report_check")
@requires_scope(REPORTS)
@seed_operation(query=CompatTaskQuery, ok=(200, CompatTaskStatus), errors=(*READ, "HTTP_404"))
def report_check():
    """A task's status: ``progress``, ``success`` (with ``link_to_file``) or ``fail``."""
    report = _task("task_id")
    ready = report.status == ReportStatus.FINISHED
    link = url_for("api_compat.download", id=str(report.id), _external=True) if ready else ""
    return out(CompatTaskStatus(status=SEED_STATUS.get(report.status, "progress"), link_to_file=link))


@bp.get("/download")
@requires_scope(REPORTS)
@seed_operation(query=CompatDownloadQuery, csv=True, errors=(*READ, "HTTP_404", "HTTP_409"))
def download():
    """The report as the seed's CSV (``user,segment,operation,date``), as an attachment; 409
    while it is not ready (or when it failed)."""
    report = _task("id")
    if report.status == ReportStatus.FAILED:
        raise Conflict(
            f"report failed: {report.error}",
            [detail("id", "failed", code="report_failed", status="fail")],
            code="report_failed",
        )
    if report.status != ReportStatus.FINISHED:
        raise Conflict(
            f"report is {report.status}, not ready yet",
            [detail("id", "not ready", code="report_not_ready", status="progress")],
            code="not_ready",
        )
    try:
        handle = open(reports.report_path(report), newline="", encoding="utf-8")  # noqa: SIM115  (closed with the response)
    except FileNotFoundError:
        raise NotFound(
            "the report file no longer exists; request the report again",
            [detail("id", "file gone", code="report_gone")],
            code="report_gone",
        ) from None
    # A report in the spreadsheet format (the dashboard's) is sent as it was written; the seed's
    # conversion reads the API's own format only.
    response = Response(
        (line.encode() for line in handle) if reports.is_spreadsheet(report) else reports.seed_csv(handle),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{reports.download_name(report)}"',
            "Cache-Control": "no-cache",
        },
    )
    response.call_on_close(handle.close)
    return response
