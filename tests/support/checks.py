"""What the tests check answers and the database with: the error envelope, a plain dashboard
page, a fingerprint of every table, timings against a same-test baseline."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask

# Every table a test may write, emptied after tests that commit (tests/conftest.py).
TABLES = [
    "webhook_deliveries",
    "trait_events",
    "trait_keys",
    "user_traits",
    "rule_matches",
    "webhook_events",
    "webhook_subscriptions",
    "membership_events",
    "rollout_exclusions",
    "memberships",
    "retired_memberships",
    "rollout_changes",
    "reports",
    "job_runs",
    "segment_events",
    "rollout_schedule",
    "bulk_operation_ids",  # (a trait import has no segment: the segments' CASCADE misses it)
    "bulk_operations",
    "segments",
    "exclusion_groups",
]


# -- requests ---------------------------------------------------------------------------------


def timed(call: Callable, *args, **kwargs):
    """(response, seconds) of one request, measured with perf_counter."""
    started = time.perf_counter()
    response = call(*args, **kwargs)
    return response, time.perf_counter() - started


def outage_limit(baseline: float, requests: int = 1) -> float:
    """How long ``requests`` requests may take while Redis is stopped or hung: 10 times
    ``baseline`` (the same requests, or one like them, measured with Redis healthy in the same
    test) plus 10 of the Redis timeouts (WEB_TIMEOUT) each may wait. Not a latency target (those are `make bench`'s): a request
    waiting for Redis to come back, the hang these tests are about, is far past it."""
    from webapp.platform.redis_client import WEB_TIMEOUT

    return 10 * (baseline + requests * WEB_TIMEOUT)


def describe(response) -> str:
    return f"{response.status_code} {response.get_data(as_text=True)[:400]!r}"


def assert_envelope(response) -> dict:
    """The API error envelope ``{"error": {"code", "message", "details"}}``; returns ``error``."""
    body = response.get_json(silent=True)
    assert isinstance(body, dict) and set(body) == {"error"}, describe(response)
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message", "details"} <= set(error), describe(response)
    assert isinstance(error["code"], str) and isinstance(error["message"], str), describe(response)
    assert isinstance(error["details"], list), describe(response)
    return error


def assert_plain_page(response) -> None:
    """A dashboard answer: HTML (or a redirect to a page), no JSON, no traceback."""
    assert response.status_code < 500, describe(response)
    if 300 <= response.status_code < 400:
        assert response.headers.get("Location"), describe(response)
        return
    assert response.mimetype == "text/html", describe(response)
    text = response.get_data(as_text=True)
    assert "Traceback" not in text, describe(response)


# -- database ---------------------------------------------------------------------------------


def snapshot(app: Flask) -> dict[str, str]:
    """A fingerprint of every table's rows (and the catalog version): equal means nothing changed."""
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        out = {}
        for table in [*TABLES, "catalog_version"]:
            out[table] = conn.scalar(
                sa.text(
                    f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                    f"FROM {table} t"
                )
            )
        return out


# -- dashboard words -------------------------------------------------------------------------

# What a message for people must not contain: schema paths, field names, regexes, ranges.
NOT_PLAIN = re.compile(
    r"\^\[|\]\{|\.\.2\^|2\^63|\(1\.\.|\b(?:user_ids?|rollout_percent|ttl_seconds|expires_at|"
    r"add\[\d|del\[\d)\b|YYYY-MM|must match|is required"
)


def messages(html: str) -> list[str]:
    """The text of every error and flash message in a page or fragment."""
    found = re.findall(
        r'<(?:div|p) class="(?:field-error|alert alert-\w+)"[^>]*>(.*?)</(?:div|p)>', html, re.S
    )
    return [re.sub(r"<[^>]+>", " ", m) for m in found]


def assert_plain(html: str) -> None:
    shown = messages(html)
    assert shown, "no message shown"
    for text in shown:
        assert not NOT_PLAIN.search(text), text


# -- API tokens of every scope (API_TOKENS as the scope tests configure it) -------------------

TOKENS = (
    "reader:tok-read-0123456789abcdef:read, reporter:tok-reports-0123456789abc:reports,"
    "writer:tok-write-0123456789abcdef:write, legacy:tok-legacy-0123456789abcdef"
)
AUTH = {
    scope: {"Authorization": f"Bearer {token}"}
    for scope, token in (
        ("read", "tok-read-0123456789abcdef"),
        ("reports", "tok-reports-0123456789abc"),
        ("write", "tok-write-0123456789abcdef"),
        ("legacy", "tok-legacy-0123456789abcdef"),
    )
}


# -- committed rows (tests with a worker process or a server: their own connection) -------------


def scalar(app: Flask, sql: str, **params: object) -> object:
    """One value of ``sql`` on a connection of ``app``'s own (committed data)."""
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)


def operation_state(app: Flask, operation_id: str) -> dict:
    """A bulk operation's row as committed: status, phase, cursor and counts, attempts, error."""
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT status, phase, cursor, done, added, updated, removed, skipped, attempts, error, "
                    "expires_at FROM bulk_operations WHERE id = :id"
                ),
                {"id": operation_id},
            )
            .mappings()
            .one()
        )


def deadlocks(app: Flask) -> int:
    """Deadlocks PostgreSQL has broken in the test database so far (``pg_stat_database``)."""
    return int(scalar(app, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()") or 0)
