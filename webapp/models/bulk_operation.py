"""Large operations run as resumable jobs: a bulk add, remove or replace of many ids, the
removal of a deleted segment's members, a restore, a trait import (of no segment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, SmallInteger, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


class BulkOperation(Model):
    __tablename__ = "bulk_operations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(20))  # OperationKind
    # None only for a trait import (OperationKind.TRAIT_IMPORT), whose slug is ""
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"), nullable=True)
    slug: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str | None] = mapped_column(String(10), nullable=True)  # a trait import's TraitImportMode
    status: Mapped[str] = mapped_column(String(10))  # ReportStatus values: queued|running|finished|failed
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    added: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    removed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # a bulk add with skip_conflicts: listed ids left out, already in another segment of the group
    skipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)  # the last user id done: resume after it
    # A replace runs in two passes, each with its own cursor: 0 adds the listed ids (cursor over
    # bulk_operation_ids), 1 removes the members not listed (cursor over the segment's members).
    phase: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(100), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_bulk_operations_created_at", "created_at"),)


class BulkOperationId(Model):
    """The ids of a pending bulk operation (COPYed in once; read in ascending chunks); for a
    trait import, each user's line (``traits``: the object to store or merge)."""

    __tablename__ = "bulk_operation_ids"

    # (no foreign key: checking each of a million COPYed rows against bulk_operations took longer
    # than writing them; the service deletes an operation's ids when it finishes or fails for good)
    operation_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    traits: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
