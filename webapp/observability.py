"""Request ids, one structured (JSON) log line per request, /healthz and /readyz."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from flask import Blueprint, Flask, g, jsonify, request
from sqlalchemy import text

from webapp.extensions import db
from webapp.redis_client import redis_client

log = logging.getLogger("segments.requests")
bp = Blueprint("ops", __name__)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def init_request_logging(app: Flask) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _log(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.path.startswith("/static/"):
            return response
        duration = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info(json.dumps({
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": response.status_code, "duration_ms": round(duration, 2),
            "client": g.get("api_client") or request.remote_addr,
        }))
        return response


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
