"""Deleted segments can be restored (issue 24): what a deletion keeps, and why entries happened.

- ``retired_memberships``: the explicit memberships a deleted segment had at its deletion (moved
  there by the deletion's removal, chunk by chunk), read back by a restore and purged when the
  restore window has passed. Rollout exclusions are not moved: a deletion leaves them in
  ``rollout_exclusions`` (reads ignore rows of segments outside the catalog).
- ``segments.restorable``: the deletion kept its members and exclusions (false for segments
  deleted before this revision, and once the purge has dropped what was kept).
- ``membership_events.reason`` also allows ``restored``.
- ``rollout_changes.schedule_id``: the scheduled change a rollout change applied (the history
  entry's cause).

Revision ID: 0016_restore_segments
Revises: 0015_bulk_skipped
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_restore_segments"
down_revision = "0015_bulk_skipped"
branch_labels = None
depends_on = None

OLD_REASONS = "'api', 'dashboard', 'ttl', 'segment_deleted', 'rollout'"
NEW_REASONS = OLD_REASONS + ", 'restored'"


def upgrade():
    op.create_table(
        "retired_memberships",
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("segment_id", "user_id", name=op.f("pk_retired_memberships")),
    )
    op.add_column(
        "segments", sa.Column("restorable", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("rollout_changes", sa.Column("schedule_id", sa.BigInteger(), nullable=True))
    op.execute("ALTER TABLE membership_events DROP CONSTRAINT ck_membership_events_reason_valid")
    op.execute(
        f"ALTER TABLE membership_events ADD CONSTRAINT ck_membership_events_reason_valid CHECK (reason IN ({NEW_REASONS}))"
    )


def downgrade():
    op.execute("ALTER TABLE membership_events DROP CONSTRAINT ck_membership_events_reason_valid")
    op.execute(
        f"ALTER TABLE membership_events ADD CONSTRAINT ck_membership_events_reason_valid CHECK (reason IN ({OLD_REASONS}))"
    )
    op.drop_column("rollout_changes", "schedule_id")
    op.drop_column("segments", "restorable")
    op.drop_table("retired_memberships")
