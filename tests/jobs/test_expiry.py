"""Nightly TTL expiry: bulk purge with history, idempotence, catch-up, scheduler registration."""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from webapp.jobs.schedule import EXPIRY_JOB_ID, REAPER_JOB_ID, get_scheduler, next_run, register_schedules
from webapp.jobs.tasks import nightly_maintenance, purge_expired
from webapp.jobs.worker import run_worker
from webapp.models import JobRun, Report
from webapp.platform.extensions import db
from webapp.services.reads.path import active_segments
from webapp.services.segments.lifecycle import create_segment


def test_hundred_thousand_expired_rows_in_one_run(app, committed_db):
    seg = create_segment(committed_db, "TTL_BULK")
    live = create_segment(committed_db, "TTL_LIVE")
    committed_db.commit()
    now = datetime.now(UTC)
    # 100k memberships that expired over the last ~3 days (a scheduler outage), 1k still valid.
    committed_db.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT g, :s, :now - interval '10 days', :now - (g || ' seconds')::interval "
            "FROM generate_series(1, 100000) g"
        ),
        {"s": seg.id, "now": now},
    )
    committed_db.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT g, :s, :now, :now + interval '1 day' FROM generate_series(1, 1000) g"
        ),
        {"s": live.id, "now": now},
    )
    committed_db.commit()
    removed = purge_expired(now=now, batch_size=30_000)
    assert removed == 100_000
    counts = committed_db.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM memberships WHERE segment_id = :s), "
            "(SELECT count(*) FROM memberships WHERE segment_id = :l), "
            "(SELECT count(*) FROM membership_events WHERE reason = 'ttl' AND action = 'removed'), "
            "(SELECT count(*) FROM membership_events e WHERE e.occurred_at <> :now - (e.user_id || ' seconds')::interval)"
        ),
        {"s": seg.id, "l": live.id, "now": now},
    ).one()
    assert tuple(counts) == (0, 1000, 100_000, 0)  # every removal stamped at its true expiry
    assert purge_expired(now=now) == 0  # second run: nothing
    assert committed_db.scalar(sa.text("SELECT count(*) FROM membership_events")) == 100_000
    assert [a.slug for a in active_segments(committed_db, 5, now=now)] == ["TTL_LIVE"]


def expired_member(session, slug: str, user_id: int, expired: str) -> None:
    """A committed segment with one member whose membership expired ``expired`` ago."""
    seg = create_segment(session, slug)
    session.commit()
    session.execute(
        sa.text(
            "INSERT INTO memberships VALUES (:u, :s, now() - interval '2 days', "
            "now() - CAST(:ago AS interval))"
        ),
        {"u": user_id, "s": seg.id, "ago": expired},
    )
    session.commit()


def test_cli_command(app, committed_db):
    expired_member(committed_db, "TTL_CLI", 1, "1 day")
    result = app.test_cli_runner().invoke(args=["expire-memberships"])
    assert result.exit_code == 0 and "expired 1 memberships" in result.output


def test_nightly_maintenance_records_its_run_and_purges_old_reports(app, committed_db, tmp_path):
    old = Report(
        kind="all_history",
        params={},
        status="finished",
        progress=100,
        rows=0,
        size_bytes=0,
        created_at=datetime.now(UTC) - timedelta(days=30),
    )
    fresh = Report(
        kind="all_history",
        params={},
        status="finished",
        progress=100,
        rows=0,
        size_bytes=0,
        created_at=datetime.now(UTC),
    )
    committed_db.add_all([old, fresh])
    committed_db.commit()
    from webapp.services.history.reports import report_path

    report_path(old).parent.mkdir(parents=True, exist_ok=True)
    report_path(old).write_text("x")
    assert nightly_maintenance() == 0
    assert not report_path(old).exists()
    assert [r.id for r in committed_db.scalars(sa.select(Report))] == [fresh.id]
    run = committed_db.scalars(sa.select(JobRun)).one()
    assert run.name == "expire-memberships" and run.finished_at and run.error is None


def test_scheduler_registration_is_idempotent(redis_app):
    scheduler = get_scheduler(redis_app)
    register_schedules(scheduler, "0 0 * * *")
    register_schedules(scheduler, "0 0 * * *")
    jobs = [j for j in scheduler.get_jobs() if j.id == EXPIRY_JOB_ID]
    assert len(jobs) == 1 and jobs[0].meta["cron_string"] == "0 0 * * *"
    register_schedules(scheduler, "30 2 * * *")  # a config change replaces, never duplicates
    jobs = [j for j in scheduler.get_jobs() if j.id == EXPIRY_JOB_ID]
    assert len(jobs) == 1 and jobs[0].meta["cron_string"] == "30 2 * * *"
    assert [j.id for j in scheduler.get_jobs() if j.id == REAPER_JOB_ID] == [REAPER_JOB_ID]  # one reaper too
    with redis_app.app_context():
        due = next_run(redis_app)
    assert (due.hour, due.minute) == (2, 30) and due > datetime.now(UTC)


def test_scheduled_job_runs_on_a_worker(redis_app, committed_db):
    expired_member(committed_db, "TTL_SCHED", 9, "1 hour")
    scheduler = get_scheduler(redis_app)
    register_schedules(scheduler, "0 0 * * *")
    scheduler.enqueue_job(
        next(j for j in scheduler.get_jobs() if j.id == EXPIRY_JOB_ID)
    )  # as if it were midnight
    run_worker(redis_app, burst=True, fork=False)
    with redis_app.app_context():
        assert db.session.scalar(sa.text("SELECT count(*) FROM memberships")) == 0
        assert db.session.scalar(sa.text("SELECT processed FROM job_runs")) == 1
