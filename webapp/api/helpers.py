"""Request parsing shared by the API views: JSON bodies, query parameters, output."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TypeVar

from flask import Response, current_app, request
from pydantic import BaseModel, ValidationError

from webapp.api import uploads
from webapp.errors import AppError, ValidationFailed, detail
from webapp.http.auth import token_name
from webapp.rules import CONSISTENCY_HEADER, parse_moment, problem_code
from webapp.services.common import ascii_int
from webapp.services.reads.path import LINE_END, Reader

M = TypeVar("M", bound=BaseModel)


def refuse_non_json_bodies() -> None:
    """before_request of the API blueprints: any body sent with a write must be declared
    ``application/json`` (415 otherwise), whether or not the route reads it — so no
    cross-site form can ever make one of these requests."""
    types = uploads.upload_types()
    if (
        request.method in ("POST", "PUT", "PATCH", "DELETE")
        and (types is not None or not request.is_json)
        and (request.content_length or request.headers.get("Transfer-Encoding"))
    ):
        if types is None:
            _not_json()
        elif request.mimetype not in types:  # (a file route: its own types, none a form can send)
            raise AppError(
                f"the file must be sent as {' or '.join(sorted(types))}",
                [
                    detail(
                        "Content-Type",
                        f"must be {' or '.join(sorted(types))}",
                        code="content_type_invalid",
                        value=request.mimetype[:60],
                    )
                ],
                code="unsupported_media_type",
                status=415,
            )


def _not_json() -> None:
    raise AppError(
        "the request body must be JSON (Content-Type: application/json)",
        [
            detail(
                "Content-Type",
                "must be application/json",
                code="content_type_invalid",
                value=request.mimetype[:60],
            )
        ],
        code="unsupported_media_type",
        status=415,
    )


def json_body(model: type[M]) -> M:
    """Parse and validate the JSON body: 415 unless it is declared ``application/json`` (so a
    cross-site form cannot write), 400 for malformed JSON, 422 for a wrong shape."""
    if not request.is_json:
        _not_json()
    raw = request.get_data(cache=True)
    data = parse_json(raw, last_duplicate_wins=request.blueprint == "api_compat")
    if data is None:
        message = "request body is empty" if not raw.strip() else "request body is not valid JSON"
        raise AppError(message, [detail("body", message, code="json_invalid")], code="malformed_json")
    if not isinstance(data, dict):
        raise ValidationFailed(
            "request body must be a JSON object",
            [detail("body", "must be an object", code="body_not_object")],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        count = exc.error_count()
        listed = f", the first {MAX_DETAILS} listed" if count > MAX_DETAILS else ""
        message = f"the request body is invalid ({count:,} problem{'s' if count > 1 else ''}{listed})"
        raise ValidationFailed(message, pydantic_details(exc)) from None


MAX_DETAILS = 100  # problems listed in one error (as services.common.user_id_details)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the API names fields: ``user_ids[3]``, ``add[0].expires_at``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, *, last_duplicate_wins: bool = False) -> object | None:
    """The one place a request's JSON is read: strict JSON (no NaN or Infinity), and an object
    naming a key twice is refused (400 ``duplicate_key``: which of the two was meant?) — unless
    ``last_duplicate_wins``, as the seed's Go service (encoding/json) read it on its paths.
    None when it is not JSON at all."""
    try:
        return json.loads(
            raw,
            object_pairs_hook=None if last_duplicate_wins else _refuse_duplicates,
            parse_constant=_refuse_constant,
        )
    except _DuplicateKey as exc:
        message = f'the key "{exc.key[:60]}" is given twice in one object of the request body'
        raise AppError(
            message,
            [detail("body", "duplicate key", code="duplicate_key", key=exc.key[:60])],
            code="duplicate_key",
        ) from None
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError; RecursionError: too deep)
        return None


def pydantic_details(exc: ValidationError) -> list[dict]:
    """Every problem pydantic found (up to MAX_DETAILS), each item of a list by its index."""
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:MAX_DETAILS]:
        given = (err.get("ctx") or {}).get("value")  # our validators name the value given
        extra = {"value": given} if isinstance(given, str) else {}
        out.append(detail(field_path(err["loc"]), err["msg"], code=err["type"], **extra))
    return out


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw, low, high)
    if value is None:
        raise ValidationFailed(
            f"{name} must be an integer between {low} and {high}",
            [
                detail(
                    name,
                    f"must be an integer between {low} and {high}",
                    code="integer_out_of_range",
                    value=raw[:40],
                    min=low,
                    max=high,
                )
            ],
        )
    return value


def query_time(name: str) -> datetime | None:
    """An ISO 8601 date or datetime query parameter; naive values are taken as UTC."""
    raw = request.args.get(name)
    if not raw:
        return None
    # An unencoded "+01:00" offset arrives as " 01:00" in a query string; a space before the
    # time ("2026-11-01 10:00") is the separator.
    head, space, tail = raw.rpartition(" ")
    if space and ":" in head and re.fullmatch(r"[0-9]{2}(?::?[0-9]{2})?", tail):
        raw = f"{head}+{tail}"
    try:
        return parse_moment(raw)
    except ValueError as exc:
        raise ValidationFailed(
            f"{name} {exc}", [detail(name, str(exc), code=problem_code(exc), value=raw[:40])]
        ) from None


def page_args() -> tuple[int, int]:
    per_page_max = current_app.config["PER_PAGE_MAX"]
    page = query_int("page", 1, 1, 1_000_000)
    per_page = query_int("per_page", current_app.config["PER_PAGE_DEFAULT"], 1, per_page_max)
    return page, per_page


def actor() -> str:
    """Who made the change, for history: the API token's name (else "api"). An ``X-Actor``
    header is recorded beside it, never instead of it."""
    who = token_name() or "api"
    on_behalf = "".join(c for c in request.headers.get("X-Actor", "") if c.isprintable()).strip()
    return (f"{who} (X-Actor: {on_behalf})" if on_behalf else who)[:100]


def report_reader() -> str | None:
    """Whose reports this API client may read: with API_TOKENS, only its own; without, any."""
    return (token_name() or "") if current_app.extensions["api_tokens"] else None


def reader() -> Reader:
    """The app's hot-read entry point (``read_path.Reader``), the same one the layer in front of
    Flask answers with."""
    reader: Reader = current_app.extensions["reader"]
    return reader


def consistency_token() -> str | None:
    """The read's ``Segments-Consistency`` header (a write's token), if it sent one."""
    return request.headers.get(CONSISTENCY_HEADER)


def out(model: BaseModel, status: int = 200, headers: dict | None = None) -> Response:
    """Serialise a response model (pydantic-core writes the JSON bytes directly), ending its line."""
    return Response(
        model.model_dump_json(by_alias=True) + LINE_END,
        status=status,
        headers=headers,
        mimetype="application/json",
    )
