"""Job functions, run by the RQ worker inside its app context. Each owns its transactions."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from rq import get_current_job
from rq.job import Job, JobStatus
from sqlalchemy import select, text, update

from webapp.models import BulkOperation, JobRun, Report
from webapp.models.enums import OperationKind, ReportStatus
from webapp.platform.extensions import db
from webapp.platform.queue import get_queue
from webapp.services import restore
from webapp.services.common import utcnow
from webapp.services.history import partitions as history_partitions
from webapp.services.history import reports
from webapp.services.membership import bulk
from webapp.services.membership import store as membership_store
from webapp.services.segments import rollout_state
from webapp.services.traits import imports as trait_imports
from webapp.services.webhooks import catalogue, outbox
from webapp.telemetry.metrics import purge_done, timed_job

log = logging.getLogger(__name__)
EXPIRY_JOB = "expire-memberships"
REAP_AFTER = timedelta(minutes=1)  # a pending report younger than this is left alone
MAX_ATTEMPTS = 3


RUN_LOCK_SPACE = 4  # advisory locks (two-int form): one run of a job at a time


@contextmanager
def _run_lock(job_id: str) -> Iterator[None]:
    """Hold a session advisory lock on ``job_id`` on a connection of its own for the run. A
    second run of the same job (an orphan retried while its first run, taken for dead, still
    goes on) waits for the first to end, then finds its record finished or resumes at its
    cursor; a run whose process died lets go with its connection."""
    with db.engine.connect() as conn:
        key = {"space": RUN_LOCK_SPACE, "key": job_id}
        conn.execute(text("SELECT pg_advisory_lock(:space, hashtext(:key))"), key)
        conn.commit()
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:space, hashtext(:key))"), key)
                conn.commit()
            except Exception:
                conn.invalidate()  # never back to the pool holding the lock
                raise


def one_run_at_a_time(job_id: Callable[[str], str]) -> Callable[[Callable[[str], int]], Callable[[str], int]]:
    def wrap(func: Callable[[str], int]) -> Callable[[str], int]:
        @functools.wraps(func)
        def run(record_id: str) -> int:
            with _run_lock(job_id(record_id)):
                return func(record_id)

        return run

    return wrap


def set_report_state(report_id: str, **values: Any) -> None:
    """Status/progress on a connection of its own: visible at once, the job's cursor untouched."""
    with db.engine.begin() as conn:
        conn.execute(update(Report).where(Report.id == uuid.UUID(str(report_id))).values(**values))


@timed_job("report")
@one_run_at_a_time(reports.report_job_id)
def generate_report(report_id: str) -> int:
    """Write one report's CSV; returns its row count. Failures are recorded readably."""
    report = reports.get_report(db.session, report_id)
    if report.status == ReportStatus.FINISHED:
        return report.rows
    set_report_state(
        report_id, status=ReportStatus.RUNNING, progress=0, error=None, attempts=Report.attempts + 1
    )
    started = time.perf_counter()
    try:
        count, path = reports.write_csv(
            db.session,
            report,
            on_progress=lambda done, total: set_report_state(
                report_id, progress=min(99, done * 100 // max(total, 1)), rows=done
            ),
        )
    except Exception as exc:
        db.session.rollback()
        job = get_current_job()
        retrying = bool(job and job.retries_left)
        message = f"{type(exc).__name__}: {exc}"[:500]
        set_report_state(
            report_id,
            status=ReportStatus.QUEUED if retrying else ReportStatus.FAILED,
            error=("retrying after " if retrying else "") + message,
        )
        raise
    db.session.rollback()  # close the streaming read
    finished_at = utcnow()
    db.session.execute(
        update(Report)
        .where(Report.id == uuid.UUID(str(report_id)))
        .values(
            status=ReportStatus.FINISHED,
            progress=100,
            rows=count,
            path=str(path),
            size_bytes=path.stat().st_size,
            finished_at=finished_at,
            error=None,
        )
    )
    _report_finished_event(report, count, finished_at)  # the outbox: in the same transaction
    db.session.commit()
    log.info("report %s: %d rows in %.2fs", report_id, count, time.perf_counter() - started)
    return count


def _report_finished_event(report: Report, rows: int, at: datetime) -> None:
    """The ``report.finished`` webhook event, with a signed download link that expires."""
    config = current_app.config
    token = reports.signed_link_token(report, config["SECRET_KEY"])
    outbox.emit(
        db.session,
        catalogue.REPORT_FINISHED,
        {
            "report": str(report.id),
            "kind": report.kind,
            "params": report.params,
            "requested_by": report.requested_by,
            "rows": rows,
            "download_url": f"{config['PUBLIC_URL']}/api/v1/report-links/{token}",
            "download_expires_at": (at + timedelta(seconds=config["WEBHOOK_LINK_SECONDS"])).isoformat(),
        },
        at=at,
    )


class Pacing:
    """Others' turn between a background loop's committed chunks (a membership operation's, the
    purge's): after each, a pause of ``fixed`` seconds or ``ratio`` times the chunk's own time,
    whichever is longer (BULK_PAUSE_MS, BULK_PAUSE_RATIO: docs/configuration.md). A ratio keeps
    the loop's share of the machine the same whatever a chunk costs: 1 leaves it half the time."""

    def __init__(self, fixed: float, ratio: float) -> None:
        self.fixed, self.ratio = max(0.0, fixed), max(0.0, ratio)
        self.started = time.perf_counter()

    @classmethod
    def configured(cls) -> Pacing:
        config = current_app.config
        return cls(config["BULK_PAUSE_MS"] / 1000, config["BULK_PAUSE_RATIO"])

    def rest(self) -> float:
        """Pause after a chunk just committed (timed since the last rest); returns the pause."""
        pause = max(self.fixed, self.ratio * (time.perf_counter() - self.started))
        if pause:
            time.sleep(pause)
        self.started = time.perf_counter()
        return pause


@timed_job("bulk_operation")
@one_run_at_a_time(bulk.operation_job_id)
def run_bulk_operation(operation_id: str) -> int:
    """Run a bulk operation to its end, one committed chunk at a time, resuming after its
    cursor; returns the rows done. A failure is recorded (RQ retries it, from the cursor)."""
    operation = bulk.get_operation(db.session, operation_id)
    if operation.status == ReportStatus.FINISHED:
        return operation.done
    operation.status, operation.attempts, operation.error = ReportStatus.RUNNING, operation.attempts + 1, None
    db.session.commit()
    # one machinery, two services: a trait import's chunks are the traits service's (above membership)
    runner = trait_imports if operation.kind == OperationKind.TRAIT_IMPORT else bulk
    try:
        bulk.analyse_staged(db.session, operation)
        db.session.commit()
        pacing = Pacing.configured() if operation.kind in bulk.PACED_KINDS else Pacing(0.0, 0.0)
        while runner.run_chunk(db.session, operation):
            db.session.commit()
            pacing.rest()
        runner.finish(db.session, operation)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        job = get_current_job()
        retrying = bool(job and job.retries_left)
        if retrying:
            operation.status, operation.error = (
                ReportStatus.QUEUED,
                f"retrying after {type(exc).__name__}: {exc}"[:500],
            )
        else:
            bulk.give_up(db.session, operation, f"{type(exc).__name__}: {exc}")
        db.session.commit()
        raise
    log.info(
        "bulk operation %s (%s %s): %d rows", operation_id, operation.kind, operation.slug, operation.done
    )
    return operation.done


@timed_job("reaper")
def reap_stuck_jobs(now: datetime | None = None) -> int:
    """Make every pending report and bulk operation finish or fail visibly (every minute, on
    the scheduler). One whose job is gone from Redis (queued while Redis was down, or lost
    with it) or died without recording it (a work-horse killed by ``kill -9`` or the OOM
    killer) is queued again, up to MAX_ATTEMPTS starts (operations resume at their cursor),
    then marked ``failed`` with the reason. ``.part`` files of reports not running are
    deleted. Returns how many records it acted on."""
    now = now or utcnow()
    queue = get_queue(current_app, blocking=True)
    since = now - REAP_AFTER
    acted = 0
    for report in db.session.scalars(
        select(Report).where(Report.status.in_(reports.PENDING), Report.created_at < since)
    ).all():
        acted += _reap(queue.fetch_job(reports.report_job_id(report.id)), report, reports.enqueue_report, now)
    for operation in db.session.scalars(
        select(BulkOperation).where(
            BulkOperation.status.in_(reports.PENDING), BulkOperation.created_at < since
        )
    ).all():
        acted += _reap(
            queue.fetch_job(bulk.operation_job_id(operation.id)), operation, bulk.enqueue_operation, now
        )
    db.session.commit()
    running = {
        str(r) for r in db.session.scalars(select(Report.id).where(Report.status == ReportStatus.RUNNING))
    }
    for part in Path(current_app.config["REPORTS_DIR"]).glob("*.part"):
        if part.stem not in running:
            part.unlink(missing_ok=True)
    if acted:
        log.warning("reaper: %d stuck job(s) re-queued or failed", acted)
    return acted


def _reap(job: Job | None, record: Any, requeue: Callable[[Any], None], now: datetime) -> bool:
    """Act on one pending record whose job is missing or dead; False if its job is alive."""
    status = job.get_status(refresh=False) if job is not None else None
    if status is not None and status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return False
    if record.attempts < MAX_ATTEMPTS:
        record.attempts += 1  # counted here too: a job that dies before it starts counting still ends
        requeue(record)  # after this transaction commits
        return True
    result = job.latest_result() if job is not None else None
    reason = _last_line(result.exc_string if result is not None else None)
    error = (
        f"gave up after {record.attempts} attempts; the job died: {reason}"
        if reason
        else f"gave up after {record.attempts} attempts; the job was lost"
    )
    if isinstance(record, BulkOperation):
        bulk.give_up(db.session, record, error, now)
    else:
        record.status, record.finished_at, record.error = ReportStatus.FAILED, now, error[:500]
    return True


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def purge_expired(now: datetime | None = None, batch_size: int | None = None) -> int:
    """Remove every membership expired at ``now``, one committed batch at a time (short
    locks); returns how many. Rows other writers remove meanwhile are simply not there, and
    rows another transaction holds are skipped and left to the next run (reads are exact
    whether or not a row was purged)."""
    now = now or utcnow()
    batch_size = batch_size or current_app.config["EXPIRY_BATCH_SIZE"]
    total, pacing = 0, Pacing.configured()
    while True:
        removed = membership_store.expire_batch(db.session, now, batch_size)
        db.session.commit()
        total += removed
        if removed == 0:
            purge_done(total)
            return total
        pacing.rest()


def purge_restorable(now: datetime | None = None) -> int:
    """Drop what deletions kept for a restore (members, exclusions) once RESTORE_DAYS have
    passed, one committed batch at a time; returns how many rows went."""
    now, total = now or utcnow(), 0
    days, batch = current_app.config["RESTORE_DAYS"], current_app.config["EXPIRY_BATCH_SIZE"]
    while gone := restore.purge_expired_restores(db.session, now, days, batch):
        db.session.commit()
        total += gone
    return total


@timed_job("nightly_maintenance")
def nightly_maintenance() -> int:
    """The scheduled job: purge expired memberships, then reports past retention; create the
    coming months' history partitions and drop those past HISTORY_RETENTION_MONTHS."""
    run = JobRun(name=EXPIRY_JOB, started_at=utcnow(), processed=0)
    db.session.add(run)
    db.session.commit()
    try:
        removed = purge_expired()
        purge_restorable()
        purged = reports.purge_old_reports(db.session)
        retention = timedelta(days=current_app.config["WEBHOOK_RETENTION_DAYS"])
        outbox.purge_delivered(db.session, utcnow() - retention)
        db.session.commit()  # the purges stand even if the partition upkeep below fails
        cutoff = history_partitions.retention_cutoff(utcnow(), current_app.config["HISTORY_RETENTION_MONTHS"])
        for parent in history_partitions.PARENTS:  # membership history, then trait history
            history_partitions.ensure_partitions(db.session, utcnow(), parent=parent)
            if cutoff is not None:
                history_partitions.drop_partitions_before(db.session, cutoff, parent=parent)
        run.processed, run.finished_at = removed, utcnow()
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        run.error, run.finished_at = f"{type(exc).__name__}: {exc}"[:500], utcnow()
        db.session.commit()
        raise
    log.info("nightly maintenance: %d memberships expired, %d old reports purged", removed, purged)
    return removed


@timed_job("scheduled_rollouts")
def apply_scheduled_rollouts(now: datetime | None = None) -> int:
    """Apply the scheduled rollout changes that are due (every minute, on the scheduler).
    Reads never wait for this: they count a due change from its time on anyway; applying it
    records it (at its scheduled time) and keeps the pending list short."""
    applied = rollout_state.apply_due(db.session, now)
    db.session.commit()
    if applied:
        log.info("scheduled rollouts: %d change(s) applied", applied)
    return applied
