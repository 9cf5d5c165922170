"""OpenAPI 3.1 (spectree, generated from the pydantic models) and the Swagger UI page."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Blueprint, render_template
from spectree import Response

from webapp.api.schemas import ErrorOut
from webapp.platform.extensions import spec
from webapp.rules import MAX_USER_ID, SLUG_PATTERN

bp = Blueprint("api_docs", __name__, url_prefix="/api")
ERRORS = ("HTTP_400", "HTTP_401", "HTTP_404", "HTTP_409", "HTTP_422", "HTTP_429")
# What the mechanisms in front of every view can answer, whatever the view (added to every
# operation of the document by _document): 400 a Host the service does not own, 401 a missing
# or unknown token, 403 a token's scope, 429 a rate limit, 503 the database unreachable; and for
# a write 409 (its Idempotency-Key still in flight), 413 (a body over MAX_CONTENT_LENGTH) and 415
# (a body not sent as application/json).
EVERY_CALL = (400, 401, 403, 429, 503)
EVERY_WRITE = (409, 413, 415)


class CsvResponses(Response):
    """Responses whose 200 is a CSV file (spectree itself only describes JSON bodies)."""

    def generate_spec(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        responses = super().generate_spec(*args, **kwargs)
        responses["200"]["content"] = {"text/csv": {"schema": {"type": "string"}}}
        return responses


def operation(
    *,
    tags: tuple[str, ...],
    ok: tuple[int, type] | None = None,
    json=None,
    query=None,
    errors: tuple[str, ...] = ERRORS,
    accepted: type | None = None,
    csv: bool = False,
):
    """Document an API view. Requests are parsed by the view itself (one error format), so
    spectree only describes them. ``csv``: the 200 is a CSV file."""
    codes: dict[str, type] = {code: ErrorOut for code in errors}
    if ok is not None:
        codes[f"HTTP_{ok[0]}"] = ok[1]
    if accepted is not None:  # also answers 202 with this body (work continues in the background)
        codes["HTTP_202"] = accepted
    responses = CsvResponses("HTTP_200", **codes) if csv else Response(**codes)
    register = spec.validate(json=json, query=query, resp=responses, tags=list(tags), skip_validation=True)

    def document(view):
        # Keep spectree's metadata but not its runtime wrapper (~35 µs per request on the
        # hot path): the view itself stays the route's function.
        return _documented_unwrapped(view, register(view))

    return document


def _documented_unwrapped(view: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``view``, carrying the OpenAPI metadata spectree gave ``wrapper`` (its validating wrapper of
    ``view``). spectree records an operation only for the function its ``validate`` returns, and
    reads it publicly (``get_function_metadata`` follows ``__wrapped__`` from the route's function
    down, never up); there is no public way to record it for the unwrapped view, so this is the one
    place that writes its private ``_function_metadata``."""
    metadata = spec.get_function_metadata(wrapper)
    assert metadata is not None
    spec._function_metadata[view] = metadata
    return view


RAW_BODIES: dict[tuple[str, str], dict[str, Any]] = {}  # (path, method) -> requestBody of a file route


def raw_body(
    path: str, method: str, request_body: dict[str, Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Describe a route whose body is a file (spectree describes only JSON bodies): its OpenAPI
    ``path`` (as in the document) and ``method`` get ``request_body``, set by _document."""

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        RAW_BODIES[path, method] = request_body
        return view

    return mark


PATH_PARAMETERS = {
    "user_id": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
    "slug": {"type": "string", "pattern": f"^{SLUG_PATTERN}$"},
    "name": {"type": "string", "pattern": f"^{SLUG_PATTERN}$"},
    "schedule_id": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
    "report_id": {"type": "string", "format": "uuid"},
    "operation_id": {"type": "string", "format": "uuid"},
    "subscription_id": {"type": "integer", "minimum": 1, "maximum": 2_147_483_647},
    "delivery_id": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
    "token": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,500}$"},  # a signed report link's
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "description": "Retry-safe key: the first completed response is replayed for 24 h.",
}


def _document(document: dict) -> dict:
    """What spectree cannot infer from Flask rules: typed path parameters, headers, auth, and
    the statuses every call (EVERY_CALL) or write (EVERY_WRITE) can answer."""
    error = next(
        response["content"]
        for methods in document["paths"].values()
        for operation_ in methods.values()
        for code, response in operation_["responses"].items()
        if code == "400"
    )
    for methods in document["paths"].values():
        for method, operation_ in methods.items():
            statuses = EVERY_CALL + (EVERY_WRITE if method != "get" else ())
            for status in statuses:
                operation_["responses"].setdefault(
                    str(status), {"description": HTTPStatus(status).phrase, "content": error}
                )
            for parameter in operation_.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
                    parameter["schema"] = PATH_PARAMETERS[parameter["name"]]
                if parameter["in"] == "query" and not parameter.get("required"):
                    # The views read an optional parameter sent empty ("?page=") as not sent.
                    parameter["allowEmptyValue"] = True
            for (path, verb), body in RAW_BODIES.items():
                if path in document["paths"] and document["paths"][path] is methods and verb == method:
                    operation_["requestBody"] = body
            if method in ("post", "patch", "delete", "put"):
                operation_.setdefault("parameters", []).append(IDEMPOTENCY_HEADER)
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "only when API_TOKENS is set"}
    }
    return _markdown(document)


def _markdown(node: Any) -> Any:
    """Docstrings are reStructuredText (````code````); the document's texts are CommonMark, which
    Swagger UI renders: literal double backticks become single ones in every summary and
    description."""
    if isinstance(node, dict):
        return {
            key: _RST_LITERAL.sub(r"`\1`", value)
            if key in ("summary", "description") and isinstance(value, str)
            else _markdown(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_markdown(item) for item in node]
    return node


_RST_LITERAL = re.compile(r"``([^`]+)``")


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document, generated once per process."""
    if "document" not in _cache:
        _cache["document"] = _document(copy.deepcopy(spec.spec))
    return _cache["document"]


_cache: dict = {}


@bp.get("/docs")
def swagger_ui():
    return render_template("api_docs.html")
