"""Webhooks (issue 27): subscriptions, the outbox of events and one delivery per (event,
subscription).

``webhook_events`` is the outbox: a row is written in the transaction of the change it tells
about, and the deliveries to every subscription wanting its type with it, so a crash or a Redis
outage loses nothing (the delivery job and the minutely sweep send whatever is due)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


class WebhookSubscription(Model):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="", server_default="")
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(60)))
    secret: Mapped[str] = mapped_column(String(100))
    # the secret before the last rotation, still signing (as a second signature) until then
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEvent(Model):
    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)  # webhook-id: stable across retries
    type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Model):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    subscription_id: Mapped[int] = mapped_column(Integer)
    # pending (due at next_attempt_at) | sending (leased until lease_until) | delivered
    state: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id", name="uq_webhook_deliveries_event_subscription"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
    )
