"""The two hot reads served in front of Flask: ``GET /api/v1/users/<id>/segments`` and the
seed's ``GET /segment/user?id=<id>`` (``api.hot_routes``: the routes Flask registers too).

Other services call these on every request, and Flask's request machinery (contexts,
hooks, response objects) costs more than the read itself. This WSGI layer answers only the
plain success path, through the same entry point the Flask views call — the app's reader
(``read_path.Reader.answer``: the server and the read, the body, the read counts; the
``Segments-Consistency`` header goes with it) — and the same pieces
around it: token identification (``auth.name_for``: every scope may read), the request id,
log line and latency observation (``observability``, ``metrics``), the security headers
(``security.HEADERS``). It hands everything else to Flask unchanged: another method or path,
an id that is not plain decimal digits in range, a missing or unknown token, a hot-path rate
limit, a read that fails. So every error and every rule keeps its one home in the Flask app.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from webapp.api.hot_routes import HOT_ROUTES, HotRoute
from webapp.http.auth import name_for
from webapp.http.security import HEADERS, UNTRUSTED_HOST
from webapp.rules import MAX_USER_ID, bounded_int
from webapp.services.replicas import ENVIRON_KEY
from webapp.telemetry.metrics import observe_request
from webapp.telemetry.observability import STARTED, request_id

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
        body, client, route = answer
        status = 200 if body else 204  # (only the seed's read has an empty answer)
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Request-ID", rid),
            *HEADERS.items(),
        ]
        start_response("200 OK" if body else "204 NO CONTENT", headers)
        observe_request(route.endpoint, status, time.perf_counter() - started)
        self.app.extensions["request_log"].write(
            rid, "GET", environ.get("PATH_INFO", ""), status, started, client
        )
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[bytes, str | None, HotRoute] | None:
        """(body, client, route) for a plain success, or None to let Flask answer."""
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        for route in HOT_ROUTES:
            if (digits := route.user_id(path, query)) is not None:
                break
        else:
            return None
        user_id = bounded_int(digits, MAX_USER_ID)
        if not user_id or UNTRUSTED_HOST in environ:  # (a Host not ours: Flask refuses it)
            return None
        config, tokens = self.app.config, self.app.extensions["api_tokens"]
        client = name_for(environ.get("HTTP_AUTHORIZATION", ""), tokens) if tokens else None
        if (tokens and client is None) or (config["RATELIMIT_ENABLED"] and config["RATELIMIT_HOT_PATH"]):
            return None
        body = self.app.extensions["reader"].answer(
            user_id, compat=route.compat, token=environ.get(ENVIRON_KEY)
        )
        return body, client or environ.get("REMOTE_ADDR"), route
