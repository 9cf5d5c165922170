"""Dashboard: reports page, request form, self-polling status fragment."""
from __future__ import annotations

from flask import render_template, request, send_file, url_for

from webapp.auth import dashboard_actor
from webapp.errors import AppError
from webapp.extensions import db, report_requests
from webapp.services import reports
from webapp.services.common import parse_user_id, utcnow
from webapp.transaction import transactional
from webapp.web import bp
from webapp.web.helpers import rejected, updated


def _context() -> dict:
    return {"reports": reports.list_reports(db.session, 50), "month": utcnow().strftime("%Y-%m"),
            "download_name": reports.download_name}


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
        report = reports.request_report(
            db.session, kind=kind, user_id=parse_user_id(raw_user) if raw_user else None,
            segment=form.get("segment", "").strip().upper() or None,
            period=None if kind == "segment_members" else form.get("period", "").strip(),
            requested_by=dashboard_actor())
    except AppError as exc:
        return rejected(exc, back, "reports/_form.html", month=utcnow().strftime("%Y-%m"))
    return updated(f"Report queued ({report.kind.replace('_', ' ')}).", back, "reports/_form.html",
                   "reports/_table_oob.html", form={}, errors={}, **_context())


@bp.get("/reports/<report_id>/status")
def report_status(report_id: str):
    return render_template("reports/_status.html", report=reports.get_report(db.session, report_id))


@bp.get("/reports/<report_id>/download")
def download_report(report_id: str):
    """The CSV for dashboard users (signed in through SSO): every report is theirs to read."""
    report = reports.get_report(db.session, report_id)
    return send_file(reports.finished_file(report), mimetype="text/csv", as_attachment=True,
                     download_name=reports.download_name(report), max_age=0)
