"""Dashboard for product managers: server-rendered pages with htmx fragments."""
from flask import Blueprint, current_app

from webapp.auth import dashboard_user, require_dashboard_user

bp = Blueprint("web", __name__)
bp.before_request(require_dashboard_user)


@bp.app_context_processor
def signed_in() -> dict[str, object]:
    return {"dashboard_user": dashboard_user(), "dashboard_open": current_app.config["DASHBOARD_OPEN"]}


from webapp.web import filters, reports, segments, status, users  # noqa: E402,F401
