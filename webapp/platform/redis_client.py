"""The app's Redis clients (REDIS_URL).

Every client a web process uses has short connect and socket timeouts, so a stalled or
unreachable Redis degrades a request (limiter in memory, no idempotency replay, a clear
503 for work that needs a queue) instead of hanging it; RQ workers and the scheduler use a
client without read timeout (blocking dequeue).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, current_app
from redis import Redis

log = logging.getLogger(__name__)
WEB_TIMEOUT = 0.25  # seconds


def redis_client(app: Flask | None = None, *, blocking: bool = False) -> Redis:
    app = app or current_app
    name = "redis_blocking" if blocking else "redis_web"
    client: Redis | None = app.extensions.get(name)
    if client is None:
        timeouts = {} if blocking else {"socket_timeout": WEB_TIMEOUT, "socket_connect_timeout": WEB_TIMEOUT}
        client = app.extensions[name] = Redis.from_url(
            app.config["REDIS_URL"], health_check_interval=30, **timeouts
        )
    return client


class OutageLog:
    """Log a dependency outage once (not once per request), and its recovery."""

    def __init__(self, what: str, every: float = 60.0):
        self.what, self.every = what, every
        self.down_since: float | None = None
        self.last = 0.0

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
