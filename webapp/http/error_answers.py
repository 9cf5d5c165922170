"""Every error answered the same way: the JSON envelope for the API, an htmx fragment or a page
for the dashboard (``error_response``), and the app's error handlers that use it."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, make_response, render_template, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from webapp.errors import AppError, DatabaseUnavailable, is_api_request, is_ofrep_request, ofrep_failure
from webapp.http.transaction import database_unreachable, rollback_quietly
from webapp.services.reads.ofrep import GENERAL

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, details: list | None = None, headers: dict[str, str] | None = None
) -> Response:
    """Render an error for whoever asked: JSON envelope, htmx fragment or a page; on OpenFeature's
    routes (``/ofrep/``) the protocol's own format instead of the envelope (GENERAL, with the
    flag's key when one was asked: the protocol's codes are answered by its views).

    The request's transaction is rolled back first: after a failed statement it is aborted, and
    the page (its jobs strip reads the database) would fail in turn. A page that still cannot be
    rendered (the database is down) is answered by a plain one that needs nothing: an error
    response is always Flask's, so it gets the security headers and its request-log line."""
    rollback_quietly()
    body: Response | str
    if is_ofrep_request():
        key = (request.view_args or {}).get("key")
        body = jsonify(ofrep_failure(GENERAL, message, key if isinstance(key, str) else None))
    elif is_api_request():
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
        if database_unreachable(exc):  # lost or refused before anything was committed
            unavailable = DatabaseUnavailable()
            unavailable.__cause__ = exc
            return _app_error(unavailable)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal server error.")
