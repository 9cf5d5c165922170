"""Delivering the outbox: claiming due deliveries (at most ``concurrency`` in flight per
subscription, rows locked so two delivery jobs never take the same one), sending one (signed,
through :mod:`outbound`), and recording the outcome: delivered, or due again after an
exponential backoff. A subscription failing without a success for ``disable_after`` seconds is
disabled, saying why. At-least-once: a delivery whose sender died (its lease ran out) is claimed
again, with the same ``webhook-id``."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from webapp.services.common import DbSession
from webapp.services.webhooks import outbound, signing


@dataclass(frozen=True)
class Settings:
    timeout: float = 10.0  # one attempt, connect to last byte read
    max_response_bytes: int = 65_536
    concurrency: int = 4  # in flight per subscription
    pool: int = 16  # in flight per delivery job
    retry_base: float = 5.0  # first retry after this, doubling
    retry_max: float = 3600.0
    disable_after: float = 86_400.0  # failing this long without a success: disabled
    lease: float = 40.0  # a claimed delivery not recorded by then is claimed again
    policy: outbound.Policy = field(default_factory=outbound.Policy)

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        return cls(
            timeout=float(config["WEBHOOK_TIMEOUT_SECONDS"]),
            max_response_bytes=int(config["WEBHOOK_MAX_RESPONSE_BYTES"]),
            concurrency=int(config["WEBHOOK_CONCURRENCY"]),
            pool=int(config["WEBHOOK_POOL"]),
            retry_base=float(config["WEBHOOK_RETRY_BASE_SECONDS"]),
            retry_max=float(config["WEBHOOK_RETRY_MAX_SECONDS"]),
            disable_after=float(config["WEBHOOK_DISABLE_AFTER_SECONDS"]),
            lease=float(config["WEBHOOK_TIMEOUT_SECONDS"]) + float(config["WEBHOOK_LEASE_MARGIN_SECONDS"]),
            policy=outbound.Policy(
                allow_loopback=bool(config["WEBHOOK_ALLOW_LOOPBACK"]),
                allow_private=bool(config["WEBHOOK_ALLOW_PRIVATE"]),
            ),
        )


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    subscription_id: int
    attempt: int
    msg_id: str
    url: str
    secrets: list[str]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's status code; None: no answer
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


_CLAIM = text(
    """
    WITH subs AS (
        SELECT s.id, s.url, s.secret,
               CASE WHEN s.previous_secret_until > :now THEN s.previous_secret END AS previous,
               :concurrency - (
                   SELECT count(*) FROM webhook_deliveries d
                   WHERE d.subscription_id = s.id AND d.state = 'sending' AND d.lease_until > :now
               ) AS free
        FROM webhook_subscriptions s
        WHERE s.status = 'active'
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED
    ), due AS (
        SELECT picked.id, subs.url, subs.secret, subs.previous
        FROM subs CROSS JOIN LATERAL (
            SELECT d.id FROM webhook_deliveries d
            WHERE d.subscription_id = subs.id
              AND ((d.state = 'pending' AND d.next_attempt_at <= :now)
                   OR (d.state = 'sending' AND d.lease_until <= :now))
            ORDER BY d.id
            LIMIT greatest(subs.free, 0)
            FOR UPDATE OF d SKIP LOCKED
        ) picked
        LIMIT :total
    )
    UPDATE webhook_deliveries d
    SET state = 'sending', lease_until = :lease_until, attempts = d.attempts + 1, last_attempt_at = :now
    FROM due, webhook_events e
    WHERE d.id = due.id AND e.id = d.event_id
    RETURNING d.id, d.subscription_id, d.attempts, e.msg_id, e.payload, due.url, due.secret, due.previous
    """
)


def claim(session: DbSession, now: datetime, settings: Settings, total: int) -> list[Claim]:
    """Take up to ``total`` due deliveries (leased until ``now`` + lease); the caller commits."""
    if total <= 0:
        return []
    rows = session.execute(
        _CLAIM,
        {
            "now": now,
            "concurrency": settings.concurrency,
            "total": total,
            "lease_until": now + timedelta(seconds=settings.lease),
        },
    ).all()
    return [
        Claim(
            delivery_id=row.id,
            subscription_id=row.subscription_id,
            attempt=row.attempts,
            msg_id=row.msg_id,
            url=row.url,
            secrets=[row.secret] + ([row.previous] if row.previous else []),
            body=json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode(),
        )
        for row in sorted(rows, key=lambda r: int(r.id))
    ]


def send(claim: Claim, settings: Settings, resolve: outbound.Resolver = outbound.system_resolver) -> Outcome:
    """One attempt (no database): the destination checked before connecting, signed now."""
    started = time.monotonic()
    try:
        target = outbound.destination(claim.url, settings.policy, resolve)
        timestamp = int(time.time())
        answer = outbound.post(
            target,
            claim.body,
            signing.headers(claim.secrets, claim.msg_id, timestamp, claim.body),
            timeout=settings.timeout,
            max_bytes=settings.max_response_bytes,
        )
    except outbound.Refused as exc:
        return Outcome(None, f"refused: {exc}", time.monotonic() - started)
    except Exception as exc:  # the receiver down, hanging, answering garbage
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], time.monotonic() - started)
    error = None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
    return Outcome(answer.status, error, answer.seconds)


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds before the next attempt after failed attempt number ``attempt`` (1-based):
    ``retry_base`` doubling up to ``retry_max``, ±10% jitter."""
    wait = min(settings.retry_base * 2 ** min(attempt - 1, 30), settings.retry_max)
    return float(wait * random.uniform(0.9, 1.1))


def record(session: DbSession, claim: Claim, outcome: Outcome, now: datetime, settings: Settings) -> None:
    """Write one attempt's outcome (the caller commits)."""
    facts = {
        "id": claim.delivery_id,
        "status": outcome.status,
        "error": outcome.error,
        "ms": round(outcome.seconds * 1000),
        "now": now,
    }
    if outcome.ok:
        session.execute(
            text(
                "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = :now, lease_until = NULL,"
                " last_status = :status, last_error = NULL, last_duration_ms = :ms WHERE id = :id"
            ),
            facts,
        )
        session.execute(
            text(
                "UPDATE webhook_subscriptions SET failing_since = NULL WHERE id = :sub AND failing_since IS NOT NULL"
            ),
            {"sub": claim.subscription_id},
        )
        return
    session.execute(
        text(
            "UPDATE webhook_deliveries SET state = 'pending', lease_until = NULL, next_attempt_at = :next,"
            " last_status = :status, last_error = :error, last_duration_ms = :ms WHERE id = :id"
        ),
        {**facts, "next": now + timedelta(seconds=backoff(claim.attempt, settings))},
    )
    session.execute(
        text(
            """
            UPDATE webhook_subscriptions
            SET failing_since = coalesce(failing_since, :now),
                status = CASE WHEN status = 'active' AND coalesce(failing_since, :now) <= :cutoff
                              THEN 'disabled' ELSE status END,
                disabled_reason = CASE WHEN status = 'active' AND coalesce(failing_since, :now) <= :cutoff
                    THEN 'disabled automatically: every delivery failed since '
                         || to_char(coalesce(failing_since, :now) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                         || ' UTC (last: ' || :error || ')'
                    ELSE disabled_reason END,
                updated_at = :now
            WHERE id = :sub
            """
        ),
        {
            "now": now,
            "cutoff": now - timedelta(seconds=settings.disable_after),
            "error": outcome.error or "failed",
            "sub": claim.subscription_id,
        },
    )


def next_due(session: DbSession) -> datetime | None:
    """When the next pending delivery of an active subscription is due (None: none pending)."""
    due: datetime | None = session.execute(
        text(
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhook_subscriptions s"
            " ON s.id = d.subscription_id WHERE d.state = 'pending' AND s.status = 'active'"
        )
    ).scalar()
    return due


def anything_due(session: DbSession, now: datetime) -> bool:
    """Whether a delivery is due now (pending and due, or leased by a sender that died)."""
    return bool(
        session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d JOIN webhook_subscriptions s"
                " ON s.id = d.subscription_id WHERE s.status = 'active' AND"
                " ((d.state = 'pending' AND d.next_attempt_at <= :now)"
                " OR (d.state = 'sending' AND d.lease_until <= :now)))"
            ),
            {"now": now},
        ).scalar()
    )
