"""User traits (issue 29): the traits services push, the keys seen, and the history of changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Uuid
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.enums import TraitAction
from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


class UserTraits(Model):
    """A user's traits: a JSON object of scalars (string, number, boolean), bounded by
    webapp.rules. Written only by webapp.services.traits.store."""

    __tablename__ = "user_traits"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TraitKey(Model):
    """A trait key seen at least once (suggestions); never removed when users lose it."""

    __tablename__ = "trait_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TraitEvent(Model):
    """One trait change of one user: which keys, how, by whom and when; never the values.

    Partitioned by month like membership_events (RANGE on ``occurred_at``, migration 0018,
    webapp.services.history.partitions): retention drops whole months. The primary key
    therefore includes ``occurred_at``."""

    __tablename__ = "trait_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    keys: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    action: Mapped[str] = mapped_column(String(10))  # TraitAction
    actor: Mapped[str] = mapped_column(String(100), default="", server_default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    operation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)  # a bulk import's

    __table_args__ = (
        CheckConstraint(f"action IN ({', '.join(repr(a.value) for a in TraitAction)})", name="action_valid"),
        Index("ix_trait_events_user_occurred", "user_id", "occurred_at"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )
