"""The dashboard's blueprint: access for every page, context for every template, no stored HTML.
The page modules register on it; the package imports them."""

from flask import Blueprint, Response, current_app

from webapp.http.auth import dashboard_user, require_dashboard_user

bp = Blueprint("web", __name__)
bp.before_request(require_dashboard_user)


@bp.app_context_processor
def signed_in() -> dict[str, object]:
    return {"dashboard_user": dashboard_user(), "dashboard_open": current_app.config["DASHBOARD_OPEN"]}


@bp.after_app_request
def never_stored(response: Response) -> Response:
    """HTML is never kept by the browser or a proxy: back/forward and history restores fetch
    the page again, so a removed segment cannot come back from a stale copy."""
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("HX-Request")  # a page and its htmx fragment share a URL
    return response
