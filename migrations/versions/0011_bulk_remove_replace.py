"""bulk_operations.removed and .phase: bulk remove and replace as resumable operations

``kind`` (String(20), no CHECK constraint) already holds the new kinds ``bulk_remove`` and
``bulk_replace``.

Revision ID: 0011_bulk_remove_replace
Revises: 0010_groups_schedules_activity
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_bulk_remove_replace"
down_revision = "0010_groups_schedules_activity"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("bulk_operations", sa.Column("removed", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("bulk_operations", sa.Column("phase", sa.SmallInteger(), server_default="0", nullable=False))


def downgrade():
    op.drop_column("bulk_operations", "phase")
    op.drop_column("bulk_operations", "removed")
