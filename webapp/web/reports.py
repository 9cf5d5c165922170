"""Dashboard: reports page, request form, self-polling status fragment."""

from __future__ import annotations

from flask import render_template, request, send_file, url_for

from webapp.errors import AppError, ValidationFailed, detail
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.platform.extensions import db, report_requests
from webapp.services import reports
from webapp.services.common import utcnow
from webapp.web import bp
from webapp.web.helpers import checked_month, rejected, typed_user_id, updated

FIELDS = ("kind", "user_id", "segment", "period")
ALIASES = {"slug": "segment"}


def _context() -> dict:
    return {"reports": reports.list_reports(db.session, 50), "month": utcnow().strftime("%Y-%m")}


@bp.app_context_processor
def report_names() -> dict[str, object]:
    return {"download_name": reports.download_name}


@bp.get("/reports")
def reports_page():
    return render_template("reports/index.html", form={}, errors={}, **_context())


@bp.post("/reports")
@report_requests
@transactional
def request_report():
    form = request.form
    back = url_for("web.reports_page")
    try:
        raw_user = form.get("user_id", "").strip()
        kind = form.get("kind") or None
        segment = (form.get("use_segment") or form.get("segment", "")).strip()
        if kind == "segment_members" and not segment:
            raise ValidationFailed(
                "enter a segment", [detail("segment", "Enter the segment's slug.", code="required")]
            )
        if kind == "user_history" and not raw_user:
            raise ValidationFailed(
                "enter a user id", [detail("user_id", "Enter the user's id.", code="required")]
            )
        report = reports.request_report(
            db.session,
            kind=kind,
            user_id=typed_user_id(raw_user) if raw_user and kind != "all_history" else None,
            segment=segment or None if kind in (None, "segment_members") else None,
            period=None if kind == "segment_members" else checked_month(form.get("period", "").strip()),
            requested_by=dashboard_actor(),
        )
    except AppError as exc:
        return rejected(
            exc, back, "reports/_form.html", fields=FIELDS, aliases=ALIASES, month=utcnow().strftime("%Y-%m")
        )
    return updated(
        f"Report queued ({report.kind.replace('_', ' ')}).",
        back,
        "reports/_form.html",
        "reports/_table_oob.html",
        form={},
        errors={},
        **_context(),
    )


@bp.get("/reports/<report_id>/status")
def report_status(report_id: str):
    return render_template("reports/_status.html", report=reports.get_report(db.session, report_id))


@bp.get("/reports/<report_id>/download")
def download_report(report_id: str):
    """The CSV for dashboard users (signed in through SSO): every report is theirs to read."""
    report = reports.get_report(db.session, report_id)
    return send_file(
        reports.finished_file(report),
        mimetype="text/csv",
        as_attachment=True,
        download_name=reports.download_name(report),
        max_age=0,
    )
