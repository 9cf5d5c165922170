"""The two hot reads served in front of Flask: ``GET /api/v1/users/<id>/segments`` and the
seed's ``GET /segment/user?id=<id>``.

Other services call these on every request, and Flask's request machinery (contexts,
hooks, response objects) costs more than the read itself. This WSGI layer answers only the
plain success path, with the same pieces Flask uses — the read (``read_path.hot_read``), the
body (``api.helpers.segments_body``, which also counts the segment reads), token identification
(``auth.name_for``: every scope may read), the request id, log line and latency observation
(``observability``, ``metrics``), the security headers (``security.HEADERS``) — and hands
everything else to Flask unchanged: another method or path, an id that is not plain decimal
digits in range, a missing or unknown token, a hot-path rate limit, a test session bound to
its own connection. So every error and every rule keeps its one home in the Flask app.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from webapp.api.helpers import segments_body, session_bound_to_a_connection
from webapp.http.auth import name_for
from webapp.http.security import HEADERS, UNTRUSTED_HOST
from webapp.rules import MAX_USER_ID, bounded_int
from webapp.services.read_path import hot_read
from webapp.telemetry.metrics import observe_request
from webapp.telemetry.observability import STARTED, request_id

API_PATH = re.compile(r"/api/v1/users/([0-9]{1,19})/segments")
COMPAT_QUERY = re.compile(r"id=([0-9]{1,19})")
ENDPOINTS = ("api.user_segments", "api_compat.user_segments")  # Flask's names for the same two reads
StartResponse = Callable[..., Any]


class HotPath:
    def __init__(self, app: Flask, wsgi_app: Callable[[dict, StartResponse], Iterable[bytes]]):
        self.app, self.wsgi_app = app, wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            answer = self._answer(environ) if environ.get("REQUEST_METHOD") == "GET" else None
        except Exception:  # e.g. the database is down: Flask answers it, with its error envelope
            answer = None
        if answer is None:
            environ[STARTED] = started
            return self.wsgi_app(environ, start_response)
        status, body, client, compat = answer
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Request-ID", rid),
            *HEADERS.items(),
        ]
        start_response("200 OK" if status == 200 else "204 NO CONTENT", headers)
        observe_request(ENDPOINTS[compat], status, time.perf_counter() - started)
        self.app.extensions["request_log"].write(
            rid, "GET", environ.get("PATH_INFO", ""), status, started, client
        )
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[int, bytes, str | None, bool] | None:
        """(status, body, client, compat) for a plain success, or None to let Flask answer."""
        path, compat = environ.get("PATH_INFO", ""), False
        match = API_PATH.fullmatch(path)
        if match is None and path == "/segment/user":
            match, compat = COMPAT_QUERY.fullmatch(environ.get("QUERY_STRING", "")), True
        user_id = bounded_int(match[1], MAX_USER_ID) if match is not None else None
        if not user_id or UNTRUSTED_HOST in environ:  # (a Host not ours: Flask refuses it)
            return None
        config, tokens = self.app.config, self.app.extensions["api_tokens"]
        client = name_for(environ.get("HTTP_AUTHORIZATION", ""), tokens) if tokens else None
        if (tokens and client is None) or (config["RATELIMIT_ENABLED"] and config["RATELIMIT_HOT_PATH"]):
            return None
        if session_bound_to_a_connection():
            return None  # only the Flask path reads through such a session
        active = hot_read(self.app.extensions["read_engine"], user_id)
        if compat and not active:
            return 204, b"", client or environ.get("REMOTE_ADDR"), compat
        return (
            200,
            segments_body(user_id, active, compat=compat),
            client or environ.get("REMOTE_ADDR"),
            compat,
        )
