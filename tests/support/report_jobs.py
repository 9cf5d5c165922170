"""Report jobs the worker tests start and kill: a big segment, its members report, the files
and the RQ job it leaves, the work-horse running it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil
import sqlalchemy as sa

from tests.support.checks import describe

MEMBERS = 300_000
# The worker's settings for a test that kills a report mid-way: a members report is written by
# COPY (300,000 rows in about 1.5 s), so its progress is told every 20 ms, not every second, and
# the test sees it running with rows written in time
MID_REPORT = {"REPORT_PROGRESS_MS": "20"}


def big_segment(app, slug: str, members: int = MEMBERS) -> None:
    """A segment with ``members`` explicit members, loaded with one INSERT ... SELECT."""
    from webapp.platform.extensions import db

    client = app.test_client()
    assert client.post("/api/v1/segments", json={"slug": slug}).status_code == 201
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                "SELECT g, s.id, now(), NULL FROM generate_series(1, :n) g, segments s WHERE s.slug = :slug"
            ),
            {"n": members, "slug": slug},
        )


def request_members_report(app, slug: str) -> str:
    response = app.test_client().post("/api/v1/reports", json={"kind": "segment_members", "segment": slug})
    assert response.status_code == 202, describe(response)
    return response.json["id"]


def part_files(app) -> list[str]:
    return sorted(p.name for p in Path(app.config["REPORTS_DIR"]).glob("*.part"))


def job_id(report_id: str) -> str:
    from webapp.services.history import reports

    return getattr(reports, "report_job_id", lambda rid: f"report-{rid}")(report_id)


def live_horse(worker):
    """The work-horse running now, or None (no waiting)."""
    for child in psutil.Process(worker.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                return child
    return None
