"""Dashboard: reports page, request form, self-polling status fragment."""

from __future__ import annotations

from datetime import datetime

from flask import Response, render_template, request, send_file, url_for

from webapp.errors import AppError, ValidationFailed, detail
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.models import Report
from webapp.models.enums import ReportKind, ReportStatus
from webapp.platform.extensions import db, report_requests
from webapp.services.common import utcnow
from webapp.services.history import reports
from webapp.web.blueprint import bp
from webapp.web.helpers import checked_month, live_segment, rejected, typed_user_id, updated

FIELDS = ("kind", "user_id", "segment", "period", "separator")
ALIASES = {"slug": "segment"}
SEPARATOR_COOKIE = "csv_separator"
SEPARATOR_NAMES = {",": "comma", ";": "semicolon"}  # the cookie's values (a bare ";" must be quoted)
SEPARATOR_KEPT_FOR = 400 * 86_400  # seconds: browsers cap a cookie's life at 400 days
# Languages whose numbers take a decimal comma: their spreadsheets (Excel's list separator)
# split CSV on ";". Anyone else's split on ",". The default until a choice is remembered.
DECIMAL_COMMA = frozenset(
    [
        "ru",
        "uk",
        "be",
        "kk",
        "uz",
        "az",
        "ky",
        "tg",
        "hy",
        "ka",
        "de",
        "fr",
        "es",
        "it",
        "pt",
        "nl",
        "pl",
        "cs",
        "sk",
        "sl",
        "hr",
        "sr",
        "bs",
        "mk",
        "bg",
        "ro",
        "hu",
        "el",
        "tr",
        "sv",
        "da",
        "nb",
        "nn",
        "no",
        "fi",
        "et",
        "lv",
        "lt",
        "is",
        "ca",
        "gl",
        "eu",
        "id",
        "vi",
    ]
)


def separator_choice() -> str:
    """The separator the dashboard's CSV forms start with: the one last chosen (a cookie), else
    the browser's language's (``;`` where numbers take a decimal comma, else ``,``). The one
    being posted counts as chosen (the form that comes back keeps it)."""
    posted = request.form.get("separator") if request.method == "POST" else None
    if posted in SEPARATOR_NAMES:
        return posted
    saved = request.cookies.get(SEPARATOR_COOKIE)
    for separator, name in SEPARATOR_NAMES.items():
        if saved == name:
            return separator
    best = request.accept_languages.best or ""
    return ";" if best.split("-")[0].split("_")[0].lower() in DECIMAL_COMMA else ","


bp.add_app_template_global(separator_choice, "separator_choice")  # macros see globals, not context


@bp.after_request
def remember_separator(response: Response) -> Response:
    """A separator chosen in any of the dashboard's CSV forms is remembered (a cookie, so the
    forms start with it with or without JavaScript)."""
    chosen = request.form.get("separator") if request.method == "POST" else None
    name = SEPARATOR_NAMES.get(chosen or "")
    if name is not None and response.status_code < 400 and name != request.cookies.get(SEPARATOR_COOKIE):
        response.set_cookie(
            SEPARATOR_COOKIE,
            name,
            max_age=SEPARATOR_KEPT_FOR,
            samesite="Lax",
            httponly=True,
            secure=request.is_secure,
        )
    return response


def sheet_separator() -> str | None:
    """The separator a dashboard form sent (the service checks it), else the remembered one."""
    return request.form.get("separator") or separator_choice()


def report_subject(report: Report) -> str:
    """Who or what the report is about: ``User 42``, ``All users``, ``Members of X``."""
    p = report.params or {}
    if report.kind == ReportKind.SEGMENT_MEMBERS:
        return f"Members of {p.get('segment')}"
    return f"User {p.get('user_id')}" if report.kind == ReportKind.USER_HISTORY else "All users"


def report_period(report: Report) -> str:
    """The period a history report covers: ``December 2026``, ``since 2023-08-29 10:32 UTC``,
    ``2025-06-01 – 2025-07-01``; a member export is a snapshot of the moment it was written."""
    p = report.params or {}
    if report.kind == ReportKind.SEGMENT_MEMBERS:
        return "snapshot"
    if p.get("period"):
        return datetime.strptime(p["period"], "%Y-%m").strftime("%B %Y")
    if p.get("since"):
        return f"since {p['since']} UTC"
    bounds = [reports.parse_bound(p[k], k) for k in ("from", "to")]
    shown = [
        f"{b:%Y-%m-%d}"
        if (b.hour, b.minute, b.second, b.microsecond) == (0, 0, 0, 0)
        else f"{b:%Y-%m-%d %H:%M}"
        for b in bounds
    ]
    return f"{shown[0]} – {shown[1]} UTC"


def report_format(report: Report) -> str:
    """How the file is written, in words."""
    if not reports.is_spreadsheet(report):
        return "CSV, API format (;)"
    return "CSV, commas" if report.params.get("separator") == "," else "CSV, semicolons"


def _context() -> dict:
    return {"reports": reports.list_reports(db.session, 50), "month": utcnow().strftime("%Y-%m")}


@bp.app_context_processor
def report_names() -> dict[str, object]:
    return {
        "download_name": lambda report: reports.download_name(report, unique=True),
        "report_subject": report_subject,
        "report_period": report_period,
        "report_format": report_format,
        "segment_exports": segment_exports,
    }


EXPORTS_SHOWN = 3  # the latest member exports listed on a segment's page


def segment_exports(slug: str) -> list[Report]:
    return reports.list_reports(db.session, EXPORTS_SHOWN, segment=slug)


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
            format=reports.SHEET_FORMAT,
            separator=sheet_separator(),
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
    """The CSV for dashboard users (signed in through SSO): every report is theirs to read,
    under a name of its own (subject, period, request time, id)."""
    report = reports.get_report(db.session, report_id)
    return send_file(
        reports.finished_file(report),
        mimetype="text/csv",
        as_attachment=True,
        download_name=reports.download_name(report, unique=True),
        max_age=0,
    )


@bp.post("/segments/<slug>/export")
@report_requests
@transactional
def export_members(slug: str):
    """*Export members* on the segment page: the same service function as the API's
    ``POST /api/v1/segments/<slug>/members:export`` (written at once when small, else a job
    whose progress the card polls); the card comes back with the export at the top."""
    segment = live_segment(slug)
    back = url_for("web.show_segment", slug=segment.slug) + "#members-export"
    try:
        report = reports.export_members(
            db.session,
            segment.slug,
            requested_by=dashboard_actor(),
            format=reports.SHEET_FORMAT,
            separator=sheet_separator(),
        )
    except AppError as exc:
        return rejected(exc, back, "segments/_export.html", fields=("separator",), segment=segment)
    ready = report.status == ReportStatus.FINISHED
    return updated(
        f"{report.rows:,} member{'' if report.rows == 1 else 's'} of {segment.slug} exported: download it below."
        if ready
        else f"Exporting the members of {segment.slug}: the download appears below when it is ready.",
        back,
        "segments/_export.html",
        form={},
        errors={},
        segment=segment,
    )
