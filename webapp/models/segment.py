"""Segments, their rollout history and the catalog version the read path revalidates against."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import Model
from webapp.models.types import UTCDateTime

LIVE_SEGMENT_SQL = "deleted_at IS NULL"  # Segment.is_live, for raw SQL and index predicates


class Segment(Model):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    rollout_basis_points: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    salt: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint("rollout_basis_points BETWEEN 0 AND 10000", name="rollout_basis_points_range"),
        # A slug is unique among live segments; deleted ones keep theirs for history.
        Index("uq_segments_live_slug", "slug", unique=True, postgresql_where=text(LIVE_SEGMENT_SQL)),
        Index("ix_segments_live_rollout", "id",
              postgresql_where=text(f"{LIVE_SEGMENT_SQL} AND rollout_basis_points > 0")),
    )

    @hybrid_property
    def is_live(self) -> bool:
        """Not deleted: the one definition of a live segment, in Python and in SQL."""
        return self.deleted_at is None

    @is_live.inplace.expression
    @classmethod
    def _is_live_expression(cls) -> Any:
        return cls.deleted_at.is_(None)

    @property
    def rollout_percent(self) -> float:
        return self.rollout_basis_points / 100


class RolloutChange(Model):
    """One change of a segment's rollout percentage; replayed to derive rollout history."""

    __tablename__ = "rollout_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), index=True)
    from_bp: Mapped[int] = mapped_column(Integer)
    to_bp: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(20))  # Reason.ROLLOUT | Reason.SEGMENT_DELETED
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CatalogVersion(Model):
    """One row whose ``version`` every transaction that changes the segment catalog (create,
    rollout change, delete) increments. The read path reads it in the same statement as a
    user's rows, so a worker's in-memory catalog is revalidated on every read."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
