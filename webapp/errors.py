"""Domain exceptions and the one place that turns any error into a response.

API requests get ``{"error": {"code", "message", "details"}}``; dashboard requests get
an error page, or for htmx requests a small fragment that htmx swaps in.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    status = 400
    code = "bad_request"

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


def detail(field: str, message: str, **extra) -> dict:
    """One entry of an error's ``details`` list."""
    return {"field": field, "message": message, **extra}


def is_api_request() -> bool:
    return request.path.startswith("/api/") or (request.blueprint or "").startswith("api")


def error_response(
    status: int, code: str, message: str, details: list | None = None, headers: dict[str, str] | None = None
) -> Response:
    """Render an error for whoever asked: JSON envelope, htmx fragment or a page."""
    body: Response | str
    if is_api_request():
        body = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    elif request.headers.get("HX-Request"):
        body = render_template("_error.html", message=message, details=details or [])
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML", **(headers or {})}
    else:
        body = render_template("error.html", status=status, message=message, details=details or [])
    resp = make_response(body, status)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


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
        return error_response(exc.status, exc.code, exc.message, exc.details)

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
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal server error.")
