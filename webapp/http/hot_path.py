"""The hot reads served in front of Flask: ``GET /api/v1/users/<id>/segments``, the seed's
``GET /segment/user?id=<id>`` and OpenFeature's single evaluation ``POST
/ofrep/v1/evaluate/flags/<key>`` (``api.hot_routes``: the routes Flask registers too).

Other services call these on every request, and Flask's request machinery (contexts,
hooks, response objects) costs more than the read itself. This WSGI layer answers only the
plain success path, through the same entry point the Flask views call — the app's reader
(``read_path.Reader.answer``, ``Reader.evaluate_flag``: the server and the read, the body, the
read counts; the ``Segments-Consistency`` header goes with it) — and the same pieces around it:
token identification (``auth.name_for``: every scope may read; ``X-API-Key`` too on OFREP's
route), the request id,
log line and latency observation (``observability``, ``metrics``), the security headers
(``security.HEADERS``). It hands everything else to Flask unchanged: another method or path,
an id that is not plain decimal digits in range, a missing or unknown token, a hot-path rate
limit, a read that fails (a ``replicas_behind`` one as it stands, not read again:
``STANDING_ERROR``); for an evaluation also a key that is not a slug, a body without a plain
Content-Length (or over ``MAX_HOT_BODY``) and any answer but a 200 (its body is handed on as it
came). So every error and every rule keeps its one home in the Flask app.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from webapp.api.hot_routes import HOT_ROUTES, OFREP_FLAG
from webapp.errors import ReplicasBehind
from webapp.http.auth import name_for
from webapp.http.security import HEADERS, UNTRUSTED_HOST
from webapp.rules import MAX_USER_ID, bounded_int
from webapp.services.reads.replicas import ENVIRON_KEY
from webapp.telemetry.metrics import observe_request
from webapp.telemetry.observability import STARTED, request_id

StartResponse = Callable[..., Any]
MAX_HOT_BODY = 16 * 1024  # an evaluation's body (its context); a larger one goes to Flask
# In the environ handed to Flask: an error this layer's read raised that is the request's answer
# as it stands (the replicas behind and the fallbacks full, after a second's wait for a slot):
# Flask raises it again (raise_standing_error) instead of reading again, waiting again.
STANDING_ERROR = "segments.hot_path.standing_error"


class HotPath:
    def __init__(self, app: Flask, wsgi_app: Callable[[dict, StartResponse], Iterable[bytes]]):
        self.app, self.wsgi_app = app, wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD")
        try:
            answer = (
                self._answer(environ)
                if method == "GET"
                else self._evaluate(environ)
                if method == "POST"
                else None
            )
        except ReplicasBehind as exc:  # (nothing read: Flask answers it as it stands, reading nothing)
            environ[STANDING_ERROR] = exc
            answer = None
        except Exception:  # e.g. the database is down: Flask answers it, with its error envelope
            answer = None
        if answer is None:
            environ[STARTED] = started
            return self.wsgi_app(environ, start_response)
        body, client, endpoint = answer
        status = 200 if body else 204  # (only the seed's read has an empty answer)
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Request-ID", rid),
            *HEADERS.items(),
        ]
        start_response("200 OK" if body else "204 NO CONTENT", headers)
        observe_request(endpoint, status, time.perf_counter() - started)
        self.app.extensions["request_log"].write(
            rid, method, environ.get("PATH_INFO", ""), status, started, client
        )
        return [body]

    def _client(self, environ: dict[str, Any], *, api_key: bool = False) -> tuple[bool, str | None]:
        """(may this layer answer, the client's name): not with a missing or unknown token (when
        tokens are configured), a Host not ours (Flask refuses it) or a hot-path rate limit."""
        config, tokens = self.app.config, self.app.extensions["api_tokens"]
        client = None
        if tokens:
            key = environ.get("HTTP_X_API_KEY") if api_key else None
            client = name_for(environ.get("HTTP_AUTHORIZATION", ""), tokens, key)
        refused = (
            (tokens and client is None)
            or (config["RATELIMIT_ENABLED"] and config["RATELIMIT_HOT_PATH"])
            or UNTRUSTED_HOST in environ
        )
        return not refused, client or environ.get("REMOTE_ADDR")

    def _answer(self, environ: dict[str, Any]) -> tuple[bytes, str | None, str] | None:
        """(body, client, endpoint) for a plain success, or None to let Flask answer."""
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        for route in HOT_ROUTES:
            if (digits := route.user_id(path, query)) is not None:
                break
        else:
            return None
        user_id = bounded_int(digits, MAX_USER_ID)
        if not user_id:
            return None
        served, client = self._client(environ)
        if not served:
            return None
        body = self.app.extensions["reader"].answer(
            user_id, compat=route.compat, token=environ.get(ENVIRON_KEY)
        )
        return body, client, route.endpoint

    def _evaluate(self, environ: dict[str, Any]) -> tuple[bytes, str | None, str] | None:
        """OFREP's single evaluation: (body, client, endpoint) for a 200, or None to let Flask
        answer (the body read here is put back for it)."""
        key = OFREP_FLAG.key(environ.get("PATH_INFO", ""))
        if key is None or environ.get("QUERY_STRING"):
            return None
        length = bounded_int(environ.get("CONTENT_LENGTH") or "", MAX_HOT_BODY)
        if length is None or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        served, client = self._client(environ, api_key=True)
        if not served:
            return None
        request_body = environ["wsgi.input"].read(length) if length else b""
        status = 0
        try:
            status, body = self.app.extensions["reader"].evaluate_flag(
                key, request_body, token=environ.get(ENVIRON_KEY)
            )
        finally:  # the body put back for Flask, should it answer after all (a raise included)
            if status != 200:
                environ["wsgi.input"] = io.BytesIO(request_body)
        return (body, client, OFREP_FLAG.endpoint) if status == 200 else None


def raise_standing_error() -> None:
    """before_request: the error the layer in front of Flask left as the request's answer
    (``STANDING_ERROR``), raised for Flask's error handlers to answer in their format."""
    error = request.environ.pop(STANDING_ERROR, None)
    if error is not None:
        raise error
