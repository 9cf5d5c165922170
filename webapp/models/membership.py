"""Explicit memberships and explicit removals from a rollout."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, PrimaryKeyConstraint, or_, text
from sqlalchemy.ext.hybrid import hybrid_method
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


def live(expires_at: datetime | None, now: datetime) -> bool:
    """A membership counts at ``now``: no expiry, or one still ahead (exclusive), whether or
    not the purge has run. The one definition, in Python; ``Membership.live_at`` is it in SQL."""
    return expires_at is None or expires_at > now


class Membership(Model):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # A user's memberships (the hot read) by index-only scans: expires_at included.
        PrimaryKeyConstraint("user_id", "segment_id", postgresql_include=["expires_at"]),
        # Covers member lists and counts (expires_at included: index-only scans).
        Index("ix_memberships_segment_user", "segment_id", "user_id", postgresql_include=["expires_at"]),
        Index("ix_memberships_expires_at", "expires_at", postgresql_where=text("expires_at IS NOT NULL")),
    )

    @hybrid_method
    def live_at(self, now: datetime) -> bool:
        """Counts at ``now``: no expiry, or one still ahead (exclusive). The one definition
        of a live membership, whether or not the purge has run."""
        return live(self.expires_at, now)

    @live_at.inplace.expression  # type: ignore[attr-defined]
    @classmethod
    def _live_at_expression(cls, now: datetime) -> Any:
        return or_(cls.expires_at.is_(None), cls.expires_at > now)


class RolloutExclusion(Model):
    """A user explicitly removed from a segment while its rollout covered them."""

    __tablename__ = "rollout_exclusions"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_rollout_exclusions_segment_user", "segment_id", "user_id"),)


class RuleMatch(Model):
    """A rule segment covers the user (issue 29): the user has stored traits, the segment's
    rules match them and the user's bucket is in the segment's rollout, as of the evaluation
    that wrote the row (a trait write, or the segment's re-evaluation operation). The
    materialised "covered" of a rule segment; written only by webapp.services.membership.store."""

    __tablename__ = "rule_matches"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # (no foreign key: migration 0019 says why; segments are never hard-deleted)
    segment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    since: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_rule_matches_segment_user", "segment_id", "user_id"),)
