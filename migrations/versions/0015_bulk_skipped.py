"""bulk_operations.skipped: ids a bulk add left out because they were already in another
segment of the segment's exclusion group (``skip_conflicts``), so the operation's counts say
where every listed id went.

Revision ID: 0015_bulk_skipped
Revises: 0014_history_visible
"""

from alembic import op

revision = "0015_bulk_skipped"
down_revision = "0014_history_visible"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE bulk_operations ADD COLUMN skipped bigint NOT NULL DEFAULT 0")


def downgrade():
    op.execute("ALTER TABLE bulk_operations DROP COLUMN skipped")
