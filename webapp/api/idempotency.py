"""Idempotency keys for mutating API calls (IETF draft "Idempotency-Key", Stripe semantics).

The header is optional and applies to operations with effects (POST, PUT, PATCH, DELETE);
on a read — a GET, or a POST that only reads, such as the batch lookup (:func:`read_only`) —
it is ignored, so a read never comes back stale.

With it, the request claims the key (client + key) while it runs; a second request with the
same key meanwhile answers 409 ``idempotency_in_progress``. Writes here are all-or-nothing,
so only a success changed anything: a 2xx (status, headers that matter, body bytes) is stored
for IDEMPOTENCY_TTL and a retry with the same key and the same request (method, path, body)
replays it byte for byte with ``Idempotent-Replayed: true``; the same key with another request
is 422 ``idempotency_key_reused``. A 4xx (validation, unknown segment, conflict) or 5xx stored
nothing and releases the key: the same request, once its cause is fixed, executes. Storage is
Redis (SET NX makes concurrent duplicates race for one owner). While Redis is unreachable,
requests are served without deduplication (logged once), never refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, g, request

from webapp.api import uploads
from webapp.errors import AppError, Conflict, ValidationFailed, detail
from webapp.http.auth import client_key
from webapp.platform.redis_client import OutageLog, redis_client

log = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
RUNNING_TTL = 90  # seconds: longer than any request may run (gunicorn's timeout is 60 s)
KEPT_HEADERS = ("Content-Type", "Location", "Segments-Consistency")  # (the write's token: still good)
_outage = OutageLog("idempotency store")
F = TypeVar("F", bound=Callable[..., Any])


def _fingerprint() -> str:
    digest = hashlib.sha256()
    # (a file upload's body by its digest: streamed to disk once, never read into memory)
    body = uploads.spooled().sha256 if uploads.upload_types() is not None else request.get_data(cache=True)
    for part in (request.method, request.path, request.query_string, body):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def read_only(view: F) -> F:
    """Mark a view that only reads whatever its method (the batch lookup): keys are ignored."""
    view.reads_only = True  # type: ignore[attr-defined]
    return view


def before_request():
    """Claim the key, or answer from a stored response / with 409 or 422."""
    g.idempotency_key = None
    key = request.headers.get(HEADER)
    if request.method not in MUTATING or key is None:
        return None
    if getattr(current_app.view_functions.get(request.endpoint or ""), "reads_only", False):
        return None
    if not KEY_RE.match(key):
        raise AppError(
            f"{HEADER} must be 1-255 visible ASCII characters",
            [detail(HEADER, "invalid key", code="idempotency_key_invalid")],
            code="invalid_idempotency_key",
        )
    store_key = f"idem:{client_key()}:{key}"
    fingerprint = _fingerprint()
    claim = json.dumps({"state": "running", "fp": fingerprint})
    try:
        store = redis_client()
        # An absolute expiry: a claim that reaches a stalled Redis late (applied when it resumes,
        # after this request gave up on it and was served) still ends RUNNING_TTL after now.
        if store.set(store_key, claim, exat=int(time.time()) + RUNNING_TTL, nx=True):
            g.idempotency_key = store_key
            _outage.ok()
            return None
        raw = store.get(store_key)
    except Exception as exc:  # store down: serve without deduplication rather than fail
        _outage.failed(exc)
        return None
    if raw is None:  # expired between SET and GET: treat as a fresh request
        return before_request()
    saved = json.loads(raw)  # type: ignore[arg-type]  # (the sync client returns bytes)
    if saved["fp"] != fingerprint:
        raise ValidationFailed(
            f"this {HEADER} was used for a different request",
            [detail(HEADER, "reused with another method, path or body", code="idempotency_key_reused")],
            code="idempotency_key_reused",
        )
    if saved["state"] == "running":
        raise Conflict(
            f"a request with this {HEADER} is still being processed; retry later",
            [detail(HEADER, "in progress", code="idempotency_in_progress")],
            code="idempotency_in_progress",
        )
    response = Response(base64.b64decode(saved["body"]), status=saved["status"])
    for name, value in saved["headers"].items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def after_request(response: Response) -> Response:
    """Store a success for replay; release the key after anything else (nothing changed)."""
    store_key = getattr(g, "idempotency_key", None)
    if not store_key:
        return response
    g.idempotency_key = None
    try:
        if not 200 <= response.status_code < 300:
            redis_client().delete(store_key)
            return response
        record = {
            "state": "done",
            "fp": _fingerprint(),
            "status": response.status_code,
            "headers": {h: response.headers[h] for h in KEPT_HEADERS if h in response.headers},
            "body": base64.b64encode(response.get_data()).decode(),
        }
        redis_client().set(store_key, json.dumps(record), ex=current_app.config["IDEMPOTENCY_TTL"])
    except Exception as exc:
        _outage.failed(exc)
    return response
