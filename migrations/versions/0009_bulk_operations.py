"""bulk_operations and bulk_operation_ids: large membership operations as resumable jobs

Revision ID: 0009_bulk_operations
Revises: 0008_report_requested_by
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_bulk_operations"
down_revision = "0008_report_requested_by"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("added", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name=op.f("fk_bulk_operations_segment_id_segments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_operations")),
    )
    op.create_index("ix_bulk_operations_created_at", "bulk_operations", ["created_at"])
    op.create_table(
        "bulk_operation_ids",
        sa.Column("operation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["operation_id"], ["bulk_operations.id"], ondelete="CASCADE",
                                name=op.f("fk_bulk_operation_ids_operation_id_bulk_operations")),
        sa.PrimaryKeyConstraint("operation_id", "user_id", name=op.f("pk_bulk_operation_ids")),
    )


def downgrade():
    op.drop_table("bulk_operation_ids")
    op.drop_index("ix_bulk_operations_created_at", table_name="bulk_operations")
    op.drop_table("bulk_operations")
