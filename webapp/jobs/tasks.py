"""Job functions. They run inside an app context (RQ worker bootstrap or the local pool)
and own their transaction boundaries."""
from __future__ import annotations

import logging
import time

from rq import get_current_job

from webapp.extensions import db
from webapp.models import JobRun
from webapp.services import invalidation, reports
from webapp.services.common import utcnow
from webapp.services.memberships import expire_memberships

log = logging.getLogger(__name__)
EXPIRY_JOB = "expire-memberships"


def generate_report(report_id: str) -> int:
    """Write one report's CSV; returns its row count. Failures are recorded readably."""
    report = reports.get_report(db.session, report_id)
    if report.status == "finished":
        return report.rows
    reports.set_state(report_id, status="running", progress=0, error=None)
    started = time.perf_counter()
    try:
        count, path = reports.write_csv(
            db.session, report,
            on_progress=lambda done, total: reports.set_state(
                report_id, progress=min(99, done * 100 // max(total, 1)), rows=done))
    except Exception as exc:
        db.session.rollback()
        job = get_current_job()
        retrying = bool(job and job.retries_left)
        message = f"{type(exc).__name__}: {exc}"[:500]
        reports.set_state(report_id, status="queued" if retrying else "failed",
                          error=("retrying after " if retrying else "") + message)
        raise
    db.session.rollback()  # close the streaming read
    reports.set_state(report_id, status="finished", progress=100, rows=count, path=str(path),
                      size_bytes=path.stat().st_size, finished_at=utcnow(), error=None)
    log.info("report %s: %d rows in %.2fs", report_id, count, time.perf_counter() - started)
    return count


def nightly_maintenance() -> int:
    """The scheduled job: purge expired memberships, then reports past retention."""
    run = JobRun(name=EXPIRY_JOB, started_at=utcnow(), processed=0)
    db.session.add(run)
    db.session.commit()
    try:
        removed = expire_memberships(db.session, commit_each_batch=True)
        purged = reports.purge_old_reports(db.session)
        run.processed, run.finished_at = removed, utcnow()
        if removed:
            invalidation.everyone_changed()
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        run.error, run.finished_at = f"{type(exc).__name__}: {exc}"[:500], utcnow()
        db.session.commit()
        raise
    log.info("nightly maintenance: %d memberships expired, %d old reports purged", removed, purged)
    return removed
