"""Append-only log of explicit membership changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String
from sqlalchemy import true as sa_true
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.enums import Action, Reason, RuleCause
from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


class MembershipEvent(Model):
    """One explicit membership change. Append-only: ``segment_id`` has no foreign key
    (segments are never hard-deleted and the slug is kept as written), which spares one
    trigger call per history row on bulk writes and purges.

    Partitioned by month (RANGE on ``occurred_at``, migration 0007): a month's report reads one
    partition and retention drops whole partitions (webapp.services.history.partitions). The
    primary key therefore includes ``occurred_at``; ``id`` still comes from its own sequence."""

    __tablename__ = "membership_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    segment_id: Mapped[int] = mapped_column(Integer)
    segment_slug: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    actor: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # False: the change moved nothing readers saw (kept for the replay, not shown; migration 0014).
    visible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # A ``rule`` row's cause (RuleCause) and that change's instant: the user's trait_events or the
    # segment's segment_events stamped then (migration 0020); NULL for other reasons.
    cause: Mapped[str | None] = mapped_column(String(10), nullable=True)
    cause_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint(f"action IN ({', '.join(repr(a.value) for a in Action)})", name="action_valid"),
        CheckConstraint(f"reason IN ({', '.join(repr(r.value) for r in Reason)})", name="reason_valid"),
        CheckConstraint(f"cause IN ({', '.join(repr(c.value) for c in RuleCause)})", name="cause_valid"),
        Index("ix_membership_events_user_occurred", "user_id", "occurred_at"),
        Index("ix_membership_events_occurred", "occurred_at"),
        Index("ix_membership_events_segment_occurred", "segment_id", "occurred_at"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )
