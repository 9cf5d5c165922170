"""Routes whose body is an uploaded file, not JSON (a trait import): its media types, and the
body streamed to a temporary file once per request (never read into memory), with the digest
the idempotency fingerprint uses."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from flask import current_app, g, request

F = TypeVar("F", bound=Callable[..., Any])
PIECE = 1024 * 1024  # bytes read from the request at a time


@dataclass
class Spool:
    file: IO[bytes]  # an anonymous temporary file (gone once closed), at its start
    size: int
    sha256: bytes


def accepts_upload(*media_types: str, limit_setting: str) -> Callable[[F], F]:
    """Mark a view whose body is a file of one of ``media_types`` (instead of JSON: the JSON-only
    rule of the API's writes leaves it alone; these are not types a cross-site form can send),
    up to the config's ``limit_setting`` bytes instead of MAX_CONTENT_LENGTH."""

    def mark(view: F) -> F:
        view.upload_types = frozenset(media_types)  # type: ignore[attr-defined]
        view.upload_limit = limit_setting  # type: ignore[attr-defined]
        return view

    return mark


def _view() -> Any:
    return current_app.view_functions.get(request.endpoint or "")


def upload_types() -> frozenset[str] | None:
    """The media types the request's view takes as a file, or None (a JSON route)."""
    return getattr(_view(), "upload_types", None)


def spooled() -> Spool:
    """The request's body in a temporary file (read once per request, in pieces, up to the
    route's limit: 413 beyond it), rewound."""
    spool: Spool | None = g.get("upload_spool")
    if spool is None:
        request.max_content_length = current_app.config[_view().upload_limit]
        file = tempfile.TemporaryFile()  # noqa: SIM115  (closed at the request's teardown)
        digest, size = hashlib.sha256(), 0
        while piece := request.stream.read(PIECE):
            file.write(piece)
            digest.update(piece)
            size += len(piece)
        spool = g.upload_spool = Spool(file, size, digest.digest())
    spool.file.seek(0)
    return spool


def close_spool(_: BaseException | None = None) -> None:
    """teardown_request: the temporary file goes with the request."""
    spool: Spool | None = g.pop("upload_spool", None)
    if spool is not None:
        spool.file.close()
