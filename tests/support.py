"""Helpers shared by test modules (not fixtures: those live in the conftest files)."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask


def gunicorn_env(app: Flask, redis_url: str, workdir: Path, port: int, **overrides: str) -> dict[str, str]:
    """The environment of a real gunicorn serving the test app's database: its own Redis,
    reports, metrics directory and port, 2 workers, no rate limits, the dashboard open."""
    return {
        **os.environ,
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": redis_url,
        "SECRET_KEY": app.config["SECRET_KEY"],
        "REPORTS_DIR": str(workdir),
        "RATELIMIT_ENABLED": "false",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "DASHBOARD_OPEN": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        **overrides,
    }
