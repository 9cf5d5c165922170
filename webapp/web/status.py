"""Dashboard: the jobs status strip (loaded lazily, refreshed by htmx)."""
from flask import current_app, render_template

from webapp.jobs.status import jobs_status
from webapp.web import bp


@bp.get("/fragments/jobs-status")
def jobs_strip():
    return render_template("_jobs_status.html", status=jobs_status(current_app))
