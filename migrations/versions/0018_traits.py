"""User traits (issue 29, stage 1): traits, the keys seen, the history of trait changes, and
trait imports as bulk operations.

- ``user_traits``: one row per user with traits, a JSON object of scalars.
- ``trait_keys``: every key seen so far (the dashboard's suggestions), inserted ON CONFLICT DO
  NOTHING by the trait writes.
- ``trait_events``: which keys changed, how (set, deleted, cleared) and by whom, never the
  values; partitioned by month like ``membership_events`` (migration 0007), its monthly
  partitions ``trait_events_yYYYYmMM`` created here from this month to three ahead, then by
  the nightly job (webapp.services.history.partitions; this file does not import webapp, so
  the naming is repeated here), ``trait_events_default`` catching the rest.
- ``bulk_operations``: a trait import is an operation of no segment (``segment_id`` NULL, ``slug``
  empty) with its ``mode`` (replace or merge); ``bulk_operation_ids.traits`` holds each user's
  line of the import until the operation ends.

Revision ID: 0018_traits
Revises: 0017_webhooks
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018_traits"
down_revision = "0017_webhooks"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3


def _add(year, month, months):
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def _bound(year, month):
    return f"'{year:04d}-{month:02d}-01 00:00:00+00'"


def upgrade():
    conn = op.get_bind()
    op.create_table(
        "user_traits",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("traits", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_traits")),
    )
    op.create_table(
        "trait_keys",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_trait_keys")),
    )
    op.execute(
        "CREATE TABLE trait_events ("
        " id bigserial NOT NULL,"
        " user_id bigint NOT NULL,"
        " keys varchar(64)[] NOT NULL,"
        " action varchar(10) NOT NULL,"
        " actor varchar(100) DEFAULT '' NOT NULL,"
        " occurred_at timestamptz NOT NULL,"
        " operation_id uuid,"
        " CONSTRAINT ck_trait_events_action_valid CHECK (action IN ('set', 'deleted', 'cleared')),"
        " CONSTRAINT pk_trait_events PRIMARY KEY (id, occurred_at)"
        ") PARTITION BY RANGE (occurred_at)"
    )
    now = conn.execute(sa.text("SELECT now() AT TIME ZONE 'UTC'")).scalar_one()
    year, month = now.year, now.month
    for _ in range(MONTHS_AHEAD + 1):
        after = _add(year, month, 1)
        op.execute(
            f"CREATE TABLE trait_events_y{year:04d}m{month:02d} PARTITION OF trait_events "
            f"FOR VALUES FROM ({_bound(year, month)}) TO ({_bound(*after)})"
        )
        year, month = after
    op.execute("CREATE TABLE trait_events_default PARTITION OF trait_events DEFAULT")
    op.create_index("ix_trait_events_user_occurred", "trait_events", ["user_id", "occurred_at"])
    op.alter_column("bulk_operations", "segment_id", existing_type=sa.Integer(), nullable=True)
    op.add_column("bulk_operations", sa.Column("mode", sa.String(length=10), nullable=True))
    op.add_column("bulk_operation_ids", sa.Column("traits", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade():
    op.drop_column("bulk_operation_ids", "traits")
    op.drop_column("bulk_operations", "mode")
    op.execute("DELETE FROM bulk_operations WHERE segment_id IS NULL")
    op.alter_column("bulk_operations", "segment_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("trait_events")  # and its partitions
    op.drop_table("trait_keys")
    op.drop_table("user_traits")
