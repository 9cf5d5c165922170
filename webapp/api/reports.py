"""/api/v1/reports: request a CSV report, poll it, download it."""

from __future__ import annotations

from flask import Response, current_app, send_file, url_for

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import json_body, out, report_reader
from webapp.api.schemas import MembersExport, ReportOut, ReportRequest
from webapp.http.auth import REPORTS, requires_scope, token_name
from webapp.http.transaction import transactional
from webapp.models import Report
from webapp.platform.extensions import db, report_requests
from webapp.services.history import reports


def report_out(report: Report) -> ReportOut:
    finished = report.status == "finished"
    return ReportOut(
        id=str(report.id),
        kind=report.kind,
        params=report.params,
        status=report.status,
        progress=report.progress,
        rows=report.rows,
        size_bytes=report.size_bytes,
        error=report.error,
        created_at=report.created_at,
        finished_at=report.finished_at,
        status_url=url_for("api.get_report", report_id=report.id, _external=True),
        download_url=url_for("api.download_report", report_id=report.id, _external=True)
        if finished
        else None,
    )


@bp.post("/reports")
@requires_scope(REPORTS)
@operation(tags=("reports",), json=ReportRequest, ok=(202, ReportOut))
@report_requests
@transactional
def create_report():
    """Queue a CSV report: a user's or everyone's history for a period, or a segment's members."""
    body = json_body(ReportRequest)
    report = reports.request_report(
        db.session,
        kind=body.kind,
        user_id=body.user_id,
        segment=body.segment,
        period=body.period,
        start=body.start,
        end=body.end,
        requested_by=token_name() or "",
        format=body.format,
        separator=body.separator,
    )
    result = report_out(report)
    return out(result, 202, {"Location": result.status_url})


@bp.post("/segments/<slug>/members:export")
@requires_scope(REPORTS)
@operation(tags=("reports", "segments"), json=MembersExport, ok=(201, ReportOut), accepted=ReportOut)
@report_requests
@transactional
def export_members(slug: str):
    """A CSV of the segment's members now that are a list of users.

    Its explicit members (TTL members with their expiry) and, for a segment in rule mode, the
    users in through its rules: each user once, exactly as reads answer them (rule members that
    a rollout exclusion or an explicit member of another segment of its exclusion group
    overrides are left out). A rule mode segment's file has a fifth column, last, ``source``
    (``explicit`` or ``rule``; a rule member's ``added_at`` and ``expires_at`` are empty). A
    plain segment's file keeps its four columns and lists its explicit members only (a rollout
    is a share of every user id, not a list), as does a plain segment whose first rules are
    still being evaluated. Up to 10,000 members: written at once, 201 with ``download_url``;
    more: 202, poll ``status_url``. The dashboard's *Export members* calls the same service
    function."""
    body = json_body(MembersExport)
    report = reports.export_members(
        db.session, slug, requested_by=token_name() or "", format=body.format, separator=body.separator
    )
    result = report_out(report)
    return out(result, 201 if result.download_url else 202, {"Location": result.status_url})


@bp.get("/reports/<report_id>")
@requires_scope(REPORTS)
@operation(tags=("reports",), ok=(200, ReportOut))
def get_report(report_id: str):
    """A report's status and progress; ``download_url`` once it is finished."""
    return out(report_out(reports.get_report(db.session, report_id, report_reader())))


@bp.get("/reports/<report_id>.csv")
@requires_scope(REPORTS)
@operation(tags=("reports",), csv=True)
def download_report(report_id: str):
    """The CSV file (``Content-Disposition: attachment``); 400 ``not_ready`` while the report is
    queued or running."""
    report = reports.get_report(db.session, report_id, report_reader())
    return _csv_file(report)


@bp.get("/report-links/<token>")
@operation(tags=("reports",), csv=True, errors=("HTTP_404",))
def download_report_by_link(token: str):
    """The CSV file of a finished report, through the signed link a ``report.finished`` webhook
    carries (no token needed: the link is the credential; it expires after
    WEBHOOK_LINK_SECONDS, then 404 ``link_invalid``)."""
    report = reports.report_from_link(
        db.session, token, current_app.config["SECRET_KEY"], current_app.config["WEBHOOK_LINK_SECONDS"]
    )
    return _csv_file(report)


download_report_by_link.signed_link = True  # http.auth lets it through


def _csv_file(report: Report) -> Response:
    """A finished report's file as an attachment (400 ``not_ready`` before it is finished)."""
    return send_file(
        reports.finished_file(report),
        mimetype="text/csv",
        as_attachment=True,
        download_name=reports.download_name(report),
        max_age=0,
    )
