"""reports.requested_by: who asked for a report (API token name or dashboard user): who may read it

Revision ID: 0008_report_requested_by
Revises: 0007_partition_history
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_report_requested_by"
down_revision = "0007_partition_history"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("reports", sa.Column("requested_by", sa.String(100), server_default="", nullable=False))


def downgrade():
    op.drop_column("reports", "requested_by")
