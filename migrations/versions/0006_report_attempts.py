"""reports.attempts: how many times a report's job started (the reaper gives up after a few)

Revision ID: 0006_report_attempts
Revises: 0005_catalog_version
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_report_attempts"
down_revision = "0005_catalog_version"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("reports", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    op.drop_column("reports", "attempts")
