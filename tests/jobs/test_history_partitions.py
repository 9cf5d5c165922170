"""membership_events partitioned by month: created ahead, rows routed, reports pruned, retention."""

import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from webapp.jobs.tasks import nightly_maintenance
from webapp.platform.extensions import db
from webapp.services.history import partitions as hp
from webapp.services.history import reports
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.segments.lifecycle import create_segment

T0 = datetime(2040, 2, 10, 12, tzinfo=UTC)  # far from the run's own months (the migration made those)


def where_rows_are(session):
    return dict(
        session.execute(
            sa.text("SELECT tableoid::regclass::text, count(*) FROM membership_events GROUP BY 1")
        ).all()
    )


def add_events(session, slug, users, at):
    for user in users:
        change_user_segments(session, user, [AddSpec(slug)], now=at)
        change_user_segments(session, user, [], [slug], now=at + timedelta(hours=1))


def test_partitions_exist_ahead_and_ensure_is_idempotent(db_session):
    created = hp.ensure_partitions(db_session, T0)
    assert created == [
        "membership_events_y2040m02",
        "membership_events_y2040m03",
        "membership_events_y2040m04",
        "membership_events_y2040m05",
    ]
    assert {(2040, m) for m in (2, 3, 4, 5)} <= set(hp.partitions(db_session))
    assert hp.ensure_partitions(db_session, T0) == []
    assert hp.ensure_partitions(db_session, T0, months_ahead=4) == ["membership_events_y2040m06"]
    assert hp.ensure_partitions(db_session, datetime(2040, 12, 31, 23, tzinfo=UTC), months_ahead=1) == [
        "membership_events_y2040m12",
        "membership_events_y2041m01",
    ]  # across the year
    # What the migration made: the run's month and three ahead, and the default partition.
    now = datetime.now(UTC)
    assert {hp.add_months(hp.month_of(now), n) for n in range(4)} <= set(hp.partitions(db_session))
    assert db_session.scalar(sa.text("SELECT to_regclass('membership_events_default') IS NOT NULL"))


def test_events_land_in_their_months_partition(db_session):
    hp.ensure_partitions(db_session, T0)
    create_segment(db_session, "PART_A", now=T0)
    add_events(db_session, "PART_A", [1, 2], T0)
    add_events(db_session, "PART_A", [3], T0 + timedelta(days=30))  # March
    assert where_rows_are(db_session) == {"membership_events_y2040m02": 4, "membership_events_y2040m03": 2}
    ids = db_session.scalars(sa.text("SELECT id FROM membership_events ORDER BY id")).all()
    assert len(set(ids)) == 6  # one id sequence across partitions


def test_rows_in_the_default_partition_move_into_a_new_month(db_session):
    create_segment(db_session, "PART_D", now=T0)
    add_events(db_session, "PART_D", [1, 2, 3], T0)  # no 2040 partition yet: default
    assert where_rows_are(db_session) == {"membership_events_default": 6}
    assert hp.ensure_partitions(db_session, T0, months_ahead=0) == ["membership_events_y2040m02"]
    assert where_rows_are(db_session) == {"membership_events_y2040m02": 6}
    add_events(db_session, "PART_D", [4], T0)
    assert where_rows_are(db_session) == {"membership_events_y2040m02": 8}


def explained(session, run):
    """EXPLAIN of every statement on membership_events that ``run`` executes, as it sent them."""
    seen = []
    connection = session.connection()

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "membership_events" in statement and not statement.startswith("EXPLAIN"):
            seen.append((statement, parameters))

    sa.event.listen(connection, "before_cursor_execute", capture)
    try:
        run()
    finally:
        sa.event.remove(connection, "before_cursor_execute", capture)
    assert seen
    return [
        "\n".join(connection.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
        for statement, parameters in seen
    ]


def test_month_report_reads_one_partition(db_session):
    hp.ensure_partitions(db_session, T0 - timedelta(days=40), months_ahead=3)  # Jan .. Apr 2040
    create_segment(db_session, "PART_R", now=T0)
    for month in (-1, 0, 1):
        add_events(db_session, "PART_R", [10, 11], T0 + timedelta(days=30 * month))
    start, end = reports.parse_period("2040-02", None, None)
    now = T0 + timedelta(days=90)
    plans = explained(db_session, lambda: reports._count_all(db_session, start, end, now))
    # the report's lines: the SELECT its COPY streams (reports.all_history_sql), as it binds it
    with db_session.connection().connection.driver_connection.cursor() as cursor:
        select = reports.all_history_sql(False, ";", "\n")
        cursor.execute("EXPLAIN " + select, reports.all_history_params(start, end, now))
        plans.append("\n".join(line for (line,) in cursor.fetchall()))
        cursor.execute(select, reports.all_history_params(start, end, now))
        rows = cursor.fetchall()
    assert len(plans) == 2
    for plan in plans:
        scanned = set(hp.PARTITION_RE.findall(plan))
        assert scanned == {("2040", "02")}, plan
        assert "membership_events_default" not in plan, plan
    assert len(rows) == 4 and reports._count_all(db_session, start, end, now) == 4


def test_retention_drops_old_partitions_and_keeps_recent(db_session):
    hp.ensure_partitions(db_session, T0, months_ahead=3)  # Feb .. May 2040
    create_segment(db_session, "PART_OLD", now=T0)
    for month in range(4):
        add_events(db_session, "PART_OLD", [20], T0 + timedelta(days=31 * month))
    db_session.execute(
        sa.text(  # a stray old row in the default partition
            "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at) "
            "VALUES (21, 1, 'PART_OLD', 'added', 'api', :at)"
        ),
        {"at": T0 - timedelta(days=400)},
    )
    cutoff = hp.retention_cutoff(datetime(2041, 3, 20, tzinfo=UTC), 12)
    assert cutoff == datetime(2040, 3, 1, tzinfo=UTC)
    dropped = hp.drop_partitions_before(db_session, cutoff)  # (the run's own months too: rolled back)
    assert [name for name in dropped if "2040" in name] == ["membership_events_y2040m02"]
    assert where_rows_are(db_session) == {
        "membership_events_y2040m03": 2,
        "membership_events_y2040m04": 2,
        "membership_events_y2040m05": 2,
    }
    assert (2040, 2) not in hp.partitions(db_session) and (2040, 3) in hp.partitions(db_session)
    assert hp.drop_partitions_before(db_session, cutoff) == []
    assert hp.retention_cutoff(T0, 0) is None


def test_nightly_job_creates_ahead_and_applies_retention(app, committed_db):
    old = datetime(2001, 1, 15, tzinfo=UTC)
    hp.ensure_partitions(committed_db, old, months_ahead=1)  # 2001-01, 2001-02
    committed_db.commit()
    app.config["HISTORY_RETENTION_MONTHS"] = 12
    try:
        nightly_maintenance()
    finally:
        app.config["HISTORY_RETENTION_MONTHS"] = 0
    months = set(hp.partitions(committed_db))
    assert not months & {(2001, 1), (2001, 2)}
    now = datetime.now(UTC)
    assert {hp.add_months(hp.month_of(now), n) for n in range(4)} <= months
    nightly_maintenance()  # retention 0: keeps everything
    assert set(hp.partitions(committed_db)) == months


@pytest.fixture
def scratch_app(app, app_on):
    """An app on a database of its own (migrated by the test itself), dropped afterwards."""
    name = f"segments_part_{secrets.token_hex(4)}"
    url = sa.make_url(app.config["DATABASE_URL"])
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    scratch = app_on(DATABASE_URL=url.set(database=name).render_as_string(hide_password=False))
    yield scratch
    with scratch.app_context():
        db.engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migration_keeps_every_row(scratch_app):
    with scratch_app.app_context():
        upgrade(revision="0006_report_attempts")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at) "
                    "SELECT g, 1, 'S', CASE WHEN g % 2 = 0 THEN 'added' ELSE 'removed' END, 'api', "
                    "now() - (g || ' days')::interval FROM generate_series(1, 100) g"
                )
            )
            before = conn.execute(
                sa.text("SELECT id, user_id, occurred_at FROM membership_events ORDER BY id")
            ).all()
        upgrade()
        with db.engine.begin() as conn:
            after = conn.execute(
                sa.text("SELECT id, user_id, occurred_at FROM membership_events ORDER BY id")
            ).all()
            where = dict(
                conn.execute(
                    sa.text("SELECT tableoid::regclass::text, count(*) FROM membership_events GROUP BY 1")
                ).all()
            )
            new_id = conn.scalar(
                sa.text(
                    "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at) "
                    "VALUES (1, 1, 'S', 'added', 'api', now()) RETURNING id"
                )
            )
            key = conn.scalar(
                sa.text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conname = 'pk_membership_events'"
                )
            )
        assert after == before
        assert "membership_events_default" not in where and sum(where.values()) == 100
        assert len(where) >= 4  # 100 days back: four or five months
        assert new_id == 101 and key == "PRIMARY KEY (id, occurred_at)"
        downgrade(revision="0006_report_attempts")
        with db.engine.begin() as conn:
            again = conn.execute(
                sa.text("SELECT id, user_id, occurred_at FROM membership_events ORDER BY id")
            ).all()
            kind = conn.scalar(sa.text("SELECT relkind FROM pg_class WHERE relname = 'membership_events'"))
        assert again == [*before, again[-1]] and len(again) == 101 and kind == "r"
