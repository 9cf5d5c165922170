"""membership_events partitioned by month (RANGE on occurred_at), rows kept

Revision ID: 0007_partition_history
Revises: 0006_report_attempts

The table is rebuilt as a partitioned one in this migration's transaction: writers wait on
the lock for the time of the copy (readers too, for the final swap). Monthly partitions
``membership_events_yYYYYmMM`` cover the months from the oldest row to three months ahead
(and any later month holding rows); ``membership_events_default`` catches the rest. Later
months are created ahead by the nightly job (webapp.services.history_partitions); this file
does not import webapp, so the naming is repeated here.
"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa

revision = "0007_partition_history"
down_revision = "0006_report_attempts"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3
INDEXES = (  # (name, columns): as the model declares them
    ("ix_membership_events_user_occurred", "user_id, occurred_at"),
    ("ix_membership_events_occurred", "occurred_at"),
    ("ix_membership_events_segment_occurred", "segment_id, occurred_at"),
)


def _add(year, month, months):
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def _bound(year, month):
    return f"'{year:04d}-{month:02d}-01 00:00:00+00'"


def _months(conn):
    """(year, month) of every partition to create: oldest row's month .. now + MONTHS_AHEAD,
    plus any later month that holds rows."""
    now = conn.execute(sa.text("SELECT now()")).scalar_one().astimezone(UTC)
    first = conn.execute(sa.text(
        "SELECT min(occurred_at) FROM membership_events")).scalar_one()
    first = (first.astimezone(UTC) if first is not None else now)
    start = (min(first, now).year, min(first, now).month)
    last = _add(now.year, now.month, MONTHS_AHEAD)
    months = []
    year, month = start
    while (year, month) <= last:
        months.append((year, month))
        year, month = _add(year, month, 1)
    later = conn.execute(sa.text(
        "SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') FROM membership_events "
        "WHERE occurred_at >= CAST(:after AS timestamptz)"),
        {"after": datetime(*_add(*last, 1), 1, tzinfo=UTC)}).scalars()
    months += sorted((m.year, m.month) for m in later)
    return months


def upgrade():
    conn = op.get_bind()
    # Writers wait from here to the commit (no row can be added behind the copy); readers go on.
    op.execute("LOCK TABLE membership_events IN EXCLUSIVE MODE")
    sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence('membership_events', 'id')")).scalar_one()
    # Same columns, defaults (the id sequence) and named check constraints.
    op.execute("CREATE TABLE membership_events_p (LIKE membership_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
               "PARTITION BY RANGE (occurred_at)")
    for year, month in _months(conn):
        after = _add(year, month, 1)
        op.execute(f"CREATE TABLE membership_events_y{year:04d}m{month:02d} PARTITION OF membership_events_p "
                   f"FOR VALUES FROM ({_bound(year, month)}) TO ({_bound(*after)})")
    op.execute("CREATE TABLE membership_events_default PARTITION OF membership_events_p DEFAULT")
    op.execute("INSERT INTO membership_events_p SELECT * FROM membership_events")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY membership_events_p.id")  # survives the DROP below
    op.execute("DROP TABLE membership_events")
    op.execute("ALTER TABLE membership_events_p RENAME TO membership_events")
    # Key and indexes built once the rows are in (each one on every partition).
    op.execute("ALTER TABLE membership_events ADD CONSTRAINT pk_membership_events PRIMARY KEY (id, occurred_at)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON membership_events ({columns})")
    op.execute("ANALYZE membership_events")


def downgrade():
    conn = op.get_bind()
    op.execute("LOCK TABLE membership_events IN EXCLUSIVE MODE")
    sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence('membership_events', 'id')")).scalar_one()
    op.execute("CREATE TABLE membership_events_plain (LIKE membership_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO membership_events_plain SELECT * FROM membership_events")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY membership_events_plain.id")
    op.execute("DROP TABLE membership_events")  # and its partitions
    op.execute("ALTER TABLE membership_events_plain RENAME TO membership_events")
    op.execute("ALTER TABLE membership_events ADD CONSTRAINT pk_membership_events PRIMARY KEY (id)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON membership_events ({columns})")
    op.execute("ANALYZE membership_events")
