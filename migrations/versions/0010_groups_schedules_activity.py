"""Exclusion groups, scheduled rollout changes, segment activity, hash scheme 2

Revision ID: 0010_groups_schedules_activity
Revises: 0009_bulk_operations
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_groups_schedules_activity"
down_revision = "0009_bulk_operations"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "exclusion_groups",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_exclusion_groups")),
    )
    # Segments created before this revision keep hash scheme 1 (their rollout populations
    # never change); new ones default to scheme 2 (see webapp.services.rollout).
    op.add_column("segments", sa.Column("hash_scheme", sa.SmallInteger(), server_default="1", nullable=False))
    op.alter_column("segments", "hash_scheme", server_default="2")
    op.create_check_constraint(op.f("ck_segments_hash_scheme_known"), "segments", "hash_scheme IN (1, 2)")
    op.add_column("segments", sa.Column("exclusion_group", sa.String(64), nullable=True))
    op.add_column("segments", sa.Column("bucket_ranges", postgresql.ARRAY(sa.Integer()), nullable=True))
    op.create_foreign_key(op.f("fk_segments_exclusion_group_exclusion_groups"), "segments", "exclusion_groups",
                          ["exclusion_group"], ["name"])
    op.create_index("ix_segments_live_group", "segments", ["exclusion_group"],
                    postgresql_where=sa.text("deleted_at IS NULL AND exclusion_group IS NOT NULL"))

    op.add_column("rollout_changes", sa.Column("actor", sa.String(100), server_default="", nullable=False))
    op.add_column("rollout_changes", sa.Column("exclusion_group", sa.String(64), nullable=True))
    op.add_column("rollout_changes", sa.Column("bucket_ranges", postgresql.ARRAY(sa.Integer()), nullable=True))

    op.create_table(
        "rollout_schedule",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rollout_basis_points", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(100), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by", sa.String(100), server_default="", nullable=False),
        sa.CheckConstraint("rollout_basis_points BETWEEN 0 AND 10000",
                           name=op.f("ck_rollout_schedule_basis_points_range")),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name=op.f("fk_rollout_schedule_segment_id_segments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_schedule")),
    )
    op.create_index("ix_rollout_schedule_segment_at", "rollout_schedule", ["segment_id", "at"])
    op.create_index("ix_rollout_schedule_pending", "rollout_schedule", ["at"],
                    postgresql_where=sa.text("applied_at IS NULL AND cancelled_at IS NULL"))

    op.create_table(
        "segment_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("segment_slug", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("actor", sa.String(100), server_default="", nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_events")),
    )
    op.create_index("ix_segment_events_segment_occurred", "segment_events", ["segment_id", "occurred_at"])


def downgrade():
    op.drop_table("segment_events")
    op.drop_table("rollout_schedule")
    op.drop_column("rollout_changes", "bucket_ranges")
    op.drop_column("rollout_changes", "exclusion_group")
    op.drop_column("rollout_changes", "actor")
    op.drop_index("ix_segments_live_group", table_name="segments")
    op.drop_constraint(op.f("fk_segments_exclusion_group_exclusion_groups"), "segments", type_="foreignkey")
    op.drop_column("segments", "bucket_ranges")
    op.drop_column("segments", "exclusion_group")
    op.drop_constraint(op.f("ck_segments_hash_scheme_known"), "segments", type_="check")
    op.drop_column("segments", "hash_scheme")
    op.drop_table("exclusion_groups")
