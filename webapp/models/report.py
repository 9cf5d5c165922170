"""Metadata of CSV report jobs; the files live in REPORTS_DIR."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.types import UTCDateTime
from webapp.platform.extensions import Model


class Report(Model):
    __tablename__ = "reports"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(30))  # ReportKind
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="queued")  # ReportStatus
    progress: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str] = mapped_column(
        String(100), default="", server_default=""
    )  # token name or SSO user
    attempts: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )  # job starts, for the reaper
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_reports_created_at", "created_at"),)
