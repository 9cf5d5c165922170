"""Dashboard: the jobs status strip. Rendered into every page (it reads without JavaScript);
htmx refreshes it every 30 seconds from this fragment."""

from flask import current_app, redirect, render_template, url_for

from webapp.jobs.status import JobsStatus, jobs_status
from webapp.web.blueprint import bp


@bp.get("/fragments/jobs-status")
def jobs_strip():
    return render_template("_jobs_status.html", status=jobs_status(current_app))


@bp.app_context_processor
def jobs_strip_context() -> dict[str, object]:
    """``current_jobs_status()`` for base.html: read only when a whole page is rendered."""

    def current_jobs_status() -> JobsStatus:
        return jobs_status(current_app)

    return {"current_jobs_status": current_jobs_status}


@bp.get("/favicon.ico")
def favicon():
    """For clients that ask for /favicon.ico whatever the page says (pages link the SVG)."""
    return redirect(url_for("static", filename="favicon.svg"), 301)
