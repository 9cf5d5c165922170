"""Segments, their rollout history and the catalog version the read path revalidates against."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model

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
    # How buckets are computed (webapp.services.rollout.buckets): 1 for segments made before
    # migration 0010 (their populations never change), 2 since.
    hash_scheme: Mapped[int] = mapped_column(SmallInteger, default=2, server_default="2")
    exclusion_group: Mapped[str | None] = mapped_column(ForeignKey("exclusion_groups.name"), nullable=True)
    # In a group: the bucket ranges [start, end) the segment owns, flat and in allocation
    # order (webapp.services.segments.groups); None outside a group (the range is [0, rollout)).
    bucket_ranges: Mapped[list[int] | None] = mapped_column(ARRAY(Integer), nullable=True)
    # Deleted, and its deletion kept its members (retired_memberships) and exclusions for a
    # restore (migration 0016); false for live segments and once the purge has dropped them.
    restorable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # Rules (issue 29, migration 0019): the canonical rule set (webapp.services.targeting), None
    # for a plain segment; its version, bumped by every change of rules, percentage or group of a
    # rule segment (a re-evaluation operation evaluates one version); ``rule_mode``: reads take
    # the segment's coverage from rule_matches (false for plain segments and while a plain
    # segment's first rules are being evaluated).
    rules: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    rules_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rule_mode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())

    __table_args__ = (
        CheckConstraint("rollout_basis_points BETWEEN 0 AND 10000", name="rollout_basis_points_range"),
        CheckConstraint("hash_scheme IN (1, 2)", name="hash_scheme_known"),
        Index(
            "ix_segments_live_group",
            "exclusion_group",
            postgresql_where=text(f"{LIVE_SEGMENT_SQL} AND exclusion_group IS NOT NULL"),
        ),
        # A slug is unique among live segments; deleted ones keep theirs for history.
        Index("uq_segments_live_slug", "slug", unique=True, postgresql_where=text(LIVE_SEGMENT_SQL)),
        Index(
            "ix_segments_live_rollout",
            "id",
            postgresql_where=text(f"{LIVE_SEGMENT_SQL} AND rollout_basis_points > 0"),
        ),
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
    reason: Mapped[str] = mapped_column(String(20))  # Reason.ROLLOUT | SEGMENT_DELETED | RESTORED
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # The segment's group and bucket ranges from this change on (None: no group, [0, to_bp)).
    exclusion_group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bucket_ranges: Mapped[list[int] | None] = mapped_column(ARRAY(Integer), nullable=True)
    # The scheduled change (rollout_schedule.id) this change applied, if any (migration 0016).
    schedule_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The segment answers by its rule matches from this change on (migration 0019).
    rule_mode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class RetiredMembership(Model):
    """An explicit membership a deleted segment had at its deletion, kept for a restore until
    the restore window has passed (moved here by the deletion's removal of its rows)."""

    __tablename__ = "retired_memberships"

    segment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ExclusionGroup(Model):
    """A named set of segments no user is in two of; its rollouts share one hash space."""

    __tablename__ = "exclusion_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    salt: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RolloutSchedule(Model):
    """A future rollout change. It counts at read time from ``at`` on whether or not the
    job that applies it (sets the segment's rollout, records the change) has run."""

    __tablename__ = "rollout_schedule"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    rollout_basis_points: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_by: Mapped[str] = mapped_column(String(100), default="", server_default="")

    __table_args__ = (
        CheckConstraint("rollout_basis_points BETWEEN 0 AND 10000", name="basis_points_range"),
        Index("ix_rollout_schedule_segment_at", "segment_id", "at"),
        Index(
            "ix_rollout_schedule_pending",
            "at",
            postgresql_where=text("applied_at IS NULL AND cancelled_at IS NULL"),
        ),
    )

    @property
    def rollout_percent(self) -> float:
        return self.rollout_basis_points / 100


class SegmentEvent(Model):
    """One segment-level change (created, description or rollout or group changed, a bulk
    import or removal as one event with its count, scheduled changes, deleted): the activity log."""

    __tablename__ = "segment_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    segment_id: Mapped[int] = mapped_column(Integer)
    segment_slug: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(30))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    actor: Mapped[str] = mapped_column(String(100), default="", server_default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_segment_events_segment_occurred", "segment_id", "occurred_at"),)


class CatalogVersion(Model):
    """One row whose ``version`` every transaction that changes the segment catalog (create,
    rollout change, delete) increments. The read path reads it in the same statement as a
    user's rows, so a worker's in-memory catalog is revalidated on every read."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
