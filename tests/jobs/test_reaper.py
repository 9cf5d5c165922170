"""The report reaper: a report whose job is lost or died never stays pending forever."""

from datetime import timedelta
from pathlib import Path

from redis import Redis

from webapp.jobs.tasks import MAX_ATTEMPTS, reap_stuck_jobs
from webapp.jobs.worker import run_worker
from webapp.models import Report
from webapp.platform.extensions import db
from webapp.services.common import utcnow
from webapp.services.history import reports
from webapp.services.segments import lifecycle as segments


def _queued_report(app):
    with app.test_request_context():
        segments.create_segment(db.session, "REAPED")
        report = reports.request_report(db.session, kind="segment_members", segment="REAPED")
        db.session.commit()
        return str(report.id)


def test_a_report_whose_job_was_lost_is_queued_again_and_finishes(redis_app, redis_url, committed_db):
    report_id = _queued_report(redis_app)
    Redis.from_url(redis_url).flushdb()  # Redis lost everything (or the enqueue never reached it)
    with redis_app.app_context():
        assert reap_stuck_jobs(now=utcnow()) == 0  # too young to be called stuck
        assert reap_stuck_jobs(now=utcnow() + timedelta(minutes=2)) == 1
    run_worker(redis_app, burst=True, fork=False)
    with redis_app.app_context():
        report = db.session.get(Report, report_id)
        assert report.status == "finished" and report.attempts == 2  # one re-queue, one start


def test_a_report_that_keeps_losing_its_job_fails_with_a_reason(redis_app, redis_url, committed_db):
    report_id = _queued_report(redis_app)
    Redis.from_url(redis_url).flushdb()
    with redis_app.app_context():
        db.session.get(Report, report_id).attempts = MAX_ATTEMPTS
        db.session.commit()
        assert reap_stuck_jobs(now=utcnow() + timedelta(minutes=2)) == 1
        report = db.session.get(Report, report_id)
        assert report.status == "failed" and "gave up after 3 attempts; the job was lost" in report.error


def test_stray_part_files_are_removed(redis_app, committed_db):
    report_id = _queued_report(redis_app)
    folder = Path(redis_app.config["REPORTS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    stray, own = folder / "dead-report.part", folder / f"{report_id}.part"
    stray.write_text("half a file")
    own.write_text("being written")
    with redis_app.app_context():
        db.session.get(Report, report_id).status = "running"
        db.session.commit()
        reap_stuck_jobs()
    assert not stray.exists() and own.exists()  # a running report's file is left alone


def test_a_bulk_operation_given_up_drops_its_ids(redis_app, redis_url, committed_db):
    """An operation that keeps losing its job fails with a reason, and its listed ids (no
    foreign key holds them any more) are deleted with it."""
    import sqlalchemy as sa

    from webapp.models import BulkOperation
    from webapp.services.membership import bulk

    with redis_app.test_request_context():
        segments.create_segment(db.session, "REAPED_BULK")
        operation = bulk.bulk_add(db.session, "REAPED_BULK", list(range(1, bulk.SYNC_LIMIT + 2)))
        db.session.commit()
        operation_id = operation.id
    Redis.from_url(redis_url).flushdb()
    with redis_app.app_context():
        listed = sa.text("SELECT count(*) FROM bulk_operation_ids WHERE operation_id = :op")
        assert db.session.scalar(listed, {"op": operation_id}) == bulk.SYNC_LIMIT + 1
        db.session.get(BulkOperation, operation_id).attempts = MAX_ATTEMPTS
        db.session.commit()
        assert reap_stuck_jobs(now=utcnow() + timedelta(minutes=2)) == 1
        operation = db.session.get(BulkOperation, operation_id)
        assert (
            operation.status == "failed" and "gave up after 3 attempts; the job was lost" in operation.error
        )
        assert db.session.scalar(listed, {"op": operation_id}) == 0
