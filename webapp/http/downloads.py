"""Files a request downloads, answered alike by the API and the dashboard."""

from __future__ import annotations

from flask import Response, send_file

from webapp.models import Report
from webapp.services import reports


def report_file(report: Report) -> Response:
    """A finished report's CSV as an attachment under its download name, never cached; a
    report not finished yet is the service's ``not_ready`` problem."""
    return send_file(
        reports.finished_file(report),
        mimetype="text/csv",
        as_attachment=True,
        download_name=reports.download_name(report),
        max_age=0,
    )
