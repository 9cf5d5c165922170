"""Request ids, one JSON log line and one latency observation per request, /healthz, /readyz
and /metrics (webapp.telemetry.metrics)."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as json_string

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy import text

from webapp.platform.extensions import db
from webapp.platform.redis_client import redis_client
from webapp.telemetry import metrics, read_counts

log = logging.getLogger("segments.readiness")
bp = Blueprint("ops", __name__)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
STARTED = "segments.started"  # WSGI environ key: when the hot path layer first saw the request
REQUEST_LOG_FDS = {"stderr": 2, "stdout": 1, "off": None}  # REQUEST_LOG's values
# The liveness and readiness probes: answered whatever the Host (webapp.http.security); a probe
# answered 200 writes no request log line (docker-compose's probes /healthz every 10 s, make run
# once at start; a load balancer every few seconds): it is still counted and timed in /metrics, and
# a failing probe (503, 500) is logged as any request.
PROBES = frozenset({"ops.healthz", "ops.readyz"})


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is well formed, else a new one."""
    return incoming if incoming and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex


class RequestLog:
    """The one line per request (Flask's requests and the hot path's alike): a JSON object of its
    own, ``{"time", "request_id", "method", "path", "status", "duration_ms", "client"}``, written
    with one ``write`` to a file descriptor (REQUEST_LOG: stderr, stdout or off).

    Not through ``logging``: a LogRecord, its formatting and its handler's flush cost the hot
    path a tenth of its throughput; this line, a third of that (docs/performance.md). A line
    never exceeds PIPE_BUF, so on a pipe (a container's stderr) lines from several processes never
    interleave. A line the descriptor refuses (a closed pipe, a full non-blocking one) is dropped
    and counted, never a failed request; a full blocking pipe waits, as ``logging`` did.
    """

    # Every field is ASCII-escaped (at most 6 bytes a character, 12 outside the BMP) and capped
    # (+ "..." when cut): request id 64 characters, method 32, client 100, and the path 200 when
    # the whole line would pass MAX_LINE: at most 402 + 210 + 618 + 2,405 + about 170 fixed bytes.
    MAX_LINE = 4000  # bytes, below PIPE_BUF (4096)
    CAPS = {"rid": 64, "method": 32, "client": 100, "path": 200}

    def __init__(self, fd: int | None, stream: str = ""):
        self.fd, self.stream = fd, stream or str(fd)
        self._second: tuple[int, str] = (-1, "")  # (a UTC second, its ISO 8601 form)

    @classmethod
    def to(cls, where: str) -> RequestLog:
        if where not in REQUEST_LOG_FDS:
            raise RuntimeError(f"REQUEST_LOG must be one of {', '.join(REQUEST_LOG_FDS)} (got {where!r})")
        return cls(REQUEST_LOG_FDS[where], where)

    def write(
        self, rid: str, method: str, path: str, status: int, started: float, client: str | None
    ) -> None:
        if self.fd is None:
            return
        duration, now = (time.perf_counter() - started) * 1000, time.time()
        line = self.line(now, rid, method, path, status, duration, client)
        if len(line) > self.MAX_LINE:
            line = self.line(now, rid, method, _cut(path, self.CAPS["path"]), status, duration, client)
        try:
            data = line.encode()  # (ASCII: characters are bytes)
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            metrics.request_log_dropped(self.stream)

    def line(
        self,
        now: float,
        rid: str,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        client: str | None,
    ) -> str:
        second = int(now)
        stamp = self._second
        if stamp[0] != second:
            stamp = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        caps = self.CAPS
        who = "null" if client is None else json_string(_cut(client, caps["client"]))
        return (
            f'{{"time": "{stamp[1]}.{int((now - second) * 1000):03d}Z", '
            f'"request_id": {json_string(_cut(rid, caps["rid"]))}, "method": {json_string(_cut(method, caps["method"]))}, '
            f'"path": {json_string(path)}, "status": {status}, "duration_ms": {duration_ms:.2f}, "client": {who}}}\n'
        )


def _cut(text: str, most: int) -> str:
    """``text``, or its first ``most`` characters and "..." when it is longer."""
    return text if len(text) <= most else text[:most] + "..."


def init_request_logging(app: Flask) -> None:
    metrics.init_app(app)
    read_counts.init_app(app)
    request_log = app.extensions["request_log"] = RequestLog.to(app.config["REQUEST_LOG"])

    @app.before_request
    def _start() -> None:
        g.started = request.environ.get(STARTED) or time.perf_counter()
        g.request_id = request_id(request.headers.get("X-Request-ID"))

    @app.after_request
    def _log(response: Response) -> Response:
        rid = response.headers["X-Request-ID"] = g.get("request_id", "")
        if not request.path.startswith("/static/"):
            started = g.get("started") or request.environ.get(STARTED) or time.perf_counter()
            status, endpoint = response.status_code, request.endpoint or "unmatched"
            metrics.observe_request(endpoint, status, time.perf_counter() - started)
            if status == 429 and "Idempotent-Replayed" not in response.headers:
                metrics.rate_limited(endpoint)
            if status != 200 or endpoint not in PROBES:
                request_log.write(
                    rid,
                    request.method,
                    request.path,
                    status,
                    started,
                    g.get("api_client") or request.remote_addr,
                )
        return response


bp.add_url_rule("/metrics", "metrics", metrics.metrics_view)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Readiness: PostgreSQL and Redis answer (what failed is named; exception text goes to
    the log only)."""
    checks = {
        "database": _check("database", lambda: db.session.execute(text("SELECT 1")).scalar_one()),
        "redis": _check("redis", redis_client().ping),
    }
    ready = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503


def _check(name: str, probe: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        probe()
    except Exception:
        db.session.rollback()
        log.warning("readiness: %s check failed", name, exc_info=True)
        return {"ok": False, "detail": "unreachable"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
