"""Request ids, one structured (JSON) log line and one latency observation per request,
/healthz, /readyz and /metrics (webapp.metrics)."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy import text

from webapp import metrics, read_counts
from webapp.extensions import db
from webapp.redis_client import redis_client

log = logging.getLogger("segments.requests")
bp = Blueprint("ops", __name__)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
STARTED = "segments.started"  # WSGI environ key: when the hot path layer first saw the request


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is well formed, else a new one."""
    return incoming if incoming and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex


def log_request(rid: str, method: str, path: str, status: int, started: float, client: str | None) -> None:
    """The one JSON line per request (Flask's requests and the hot path's alike)."""
    log.info(json.dumps({"request_id": rid, "method": method, "path": path, "status": status,
                         "duration_ms": round((time.perf_counter() - started) * 1000, 2), "client": client}))


def init_request_logging(app: Flask) -> None:
    metrics.init_app(app)
    read_counts.init_app(app)

    @app.before_request
    def _start() -> None:
        g.started = request.environ.get(STARTED) or time.perf_counter()
        g.request_id = request_id(request.headers.get("X-Request-ID"))

    @app.after_request
    def _log(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if not request.path.startswith("/static/"):
            started = g.get("started") or request.environ.get(STARTED) or time.perf_counter()
            status, endpoint = response.status_code, request.endpoint or "unmatched"
            metrics.observe_request(endpoint, status, time.perf_counter() - started)
            if status == 429 and "Idempotent-Replayed" not in response.headers:
                metrics.rate_limited(endpoint)
            log_request(g.get("request_id", ""), request.method, request.path, status, started,
                        g.get("api_client") or request.remote_addr)
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
    checks = {"database": _check("database", lambda: db.session.execute(text("SELECT 1")).scalar_one()),
              "redis": _check("redis", redis_client().ping)}
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
