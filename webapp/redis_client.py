"""The app's Redis clients (REDIS_URL); None in the embedded default.

Web requests use short socket timeouts so a Redis outage degrades to PostgreSQL instead of
hanging a request; RQ workers use a client without read timeout (blocking dequeue).
"""
from __future__ import annotations

import logging
import time

from flask import Flask, current_app
from redis import Redis

log = logging.getLogger(__name__)
WEB_TIMEOUT = 0.25  # seconds


def redis_client(app: Flask | None = None, *, blocking: bool = False) -> Redis | None:
    app = app or current_app
    url = app.config.get("REDIS_URL")
    if not url:
        return None
    name = "redis_blocking" if blocking else "redis_web"
    client = app.extensions.get(name)
    if client is None:
        options = {} if blocking else {"socket_timeout": WEB_TIMEOUT, "socket_connect_timeout": WEB_TIMEOUT}
        client = app.extensions[name] = Redis.from_url(url, health_check_interval=30, **options)
    return client


class OutageLog:
    """Log a dependency outage once (not once per request), and its recovery."""

    def __init__(self, what: str, every: float = 60.0):
        self.what, self.every, self.down_since, self.last = what, every, None, 0.0

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None or now - self.last > self.every:
            log.warning("%s unavailable, serving without it: %s", self.what, exc)
            self.last = now
        self.down_since = self.down_since or now

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("%s is back after %.0fs", self.what, time.monotonic() - self.down_since)
            self.down_since = None
