"""Segments and their rollout history."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.models.types import BigId, UTCDateTime


class Segment(db.Model):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    rollout_basis_points: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    salt: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint(
            "rollout_basis_points BETWEEN 0 AND 10000", name="rollout_basis_points_range"
        ),
        # A slug is unique among live segments; deleted ones keep theirs for history.
        Index(
            "uq_segments_live_slug",
            "slug",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        # The read path scans live rollout segments on every request.
        Index(
            "ix_segments_live_rollout",
            "id",
            postgresql_where=text("deleted_at IS NULL AND rollout_basis_points > 0"),
            sqlite_where=text("deleted_at IS NULL AND rollout_basis_points > 0"),
        ),
    )

    @property
    def rollout_percent(self) -> float:
        return self.rollout_basis_points / 100


class RolloutChange(db.Model):
    """One change of a segment's rollout percentage; replayed to derive rollout history."""

    __tablename__ = "rollout_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), index=True)
    from_bp: Mapped[int] = mapped_column(Integer)
    to_bp: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(20))  # rollout | segment_deleted
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
