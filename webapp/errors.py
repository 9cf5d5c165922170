"""Domain exceptions and the one place that turns any error into a response.

API requests get ``{"error": {"code", "message", "details"}}``; dashboard requests get
an error page, or for htmx requests a small fragment that htmx swaps in.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from flask import Flask, Response, g, jsonify, make_response, render_template, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

Detail = dict[str, Any]  # one entry of an error's ``details``: field, message, code, parameters

log = logging.getLogger(__name__)


class AppError(Exception):
    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}

    def __init__(
        self, message: str, details: list | None = None, *, code: str | None = None, status: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code:
            self.code = code
        if status:
            self.status = status


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class DatabaseBusy(AppError):
    """PostgreSQL broke a deadlock (or a serialization conflict) on every attempt: everything
    was rolled back, the request is safe to repeat."""

    status = 503
    code = "database_busy"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("The database is busy with conflicting changes; nothing was changed. Try again.")


class DatabaseUnavailable(AppError):
    """The database connection was lost (or could not be had) before anything was committed:
    nothing happened, the request is safe to repeat."""

    status = 503
    code = "database_unavailable"
    headers = {"Retry-After": "2"}

    def __init__(self) -> None:
        super().__init__(
            "The database is unavailable for a moment; nothing was changed. Try again in a few seconds."
        )


class OutcomeUnknown(AppError):
    """The connection was lost while the transaction was committing: the change may or may not
    have been made (docs/design.md, Transactions)."""

    status = 500
    code = "outcome_unknown"

    def __init__(self) -> None:
        super().__init__(
            "The connection to the database was lost while this change was being committed: it may "
            "or may not have been made. Read it back, or retry with an Idempotency-Key "
            "(the retry runs again and its answer shows what the first attempt left)."
            if is_api_request()
            else "The connection to the database was lost while saving: the change may or may not have "
            "been made. Reload the page to see whether it was before doing it again."
        )


class Problem(NamedTuple):
    """What a check found: its stable ``code`` and the API's English ``message``."""

    code: str
    message: str


def detail(field: str, message: str, *, code: str, **params: object) -> Detail:
    """One entry of an error's ``details`` list: the ``field`` it is about, the API's English
    ``message``, a stable ``code`` naming the kind of problem (snake_case: ``unknown_segment``,
    ``group_full``, ...) and the parameters that describe this one (``slug=``, ``max_percent=``).
    Messages may be reworded; a code and its parameters are a contract: the dashboard words a
    problem from them (web.messages.WORDING), never from the message."""
    return {"field": field, "message": message, "code": code, **params}


def is_api_request() -> bool:
    return request.path.startswith("/api/") or (request.blueprint or "").startswith("api")


def error_response(
    status: int, code: str, message: str, details: list | None = None, headers: dict[str, str] | None = None
) -> Response:
    """Render an error for whoever asked: JSON envelope, htmx fragment or a page.

    The request's transaction is rolled back first: after a failed statement it is aborted, and
    the page (its jobs strip reads the database) would fail in turn. A page that still cannot be
    rendered (the database is down) is answered by a plain one that needs nothing: an error
    response is always Flask's, so it gets the security headers and its request-log line."""
    from webapp.http.transaction import rollback_quietly

    rollback_quietly()
    body: Response | str
    if is_api_request():
        body = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    elif request.headers.get("HX-Request"):
        body = _render("_error.html", message=message, details=details or [])
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML", **(headers or {})}
    else:
        body = _render("error.html", status=status, message=message, details=details or [])
    resp = make_response(body, status)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    if "Retry-After" in resp.headers:  # kept on a non-429 (webapp._retry_after_only_when_limited)
        g.retry_after = resp.headers["Retry-After"]
    return resp


def _render(template: str, **context: object) -> str:
    try:
        return render_template(template, **context)
    except Exception:
        log.exception("error page %s could not be rendered; answering a plain one", template)
        from webapp.http.transaction import rollback_quietly

        rollback_quietly()
        text = (
            f'<div class="alert alert-error" role="alert"><strong>{escape(context["message"])}</strong></div>'
        )
        if template == "_error.html":
            return text
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Something went wrong</title>'
            f'</head><body><main><h1>Something went wrong</h1>{text}<p><a href="/">Back to segments</a></p>'
            "</main></body></html>"
        )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def _app_error(exc: AppError):
        if exc.status >= 500:
            log.error("%s on %s %s", exc.code, request.method, request.path, exc_info=exc)
        return error_response(exc.status, exc.code, exc.message, exc.details, dict(exc.headers))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = _HTTP_CODES.get(exc.code or 500, "http_error")
        headers = {}
        allowed = getattr(exc, "valid_methods", None)
        if exc.code == 405 and allowed:
            headers["Allow"] = ", ".join(allowed)
        return error_response(exc.code or 500, code, exc.description or exc.name, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from webapp.http.transaction import database_unreachable

        if database_unreachable(exc):  # lost or refused before anything was committed
            unavailable = DatabaseUnavailable()
            unavailable.__cause__ = exc
            return _app_error(unavailable)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal server error.")
