"""catalog_version: the one-row counter the read path revalidates its in-memory catalog against

Revision ID: 0005_catalog_version
Revises: 0004_covering_member_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_catalog_version"
down_revision = "0004_covering_member_index"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_catalog_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_version")),
    )
    op.execute("INSERT INTO catalog_version (id, version) VALUES (1, 1)")


def downgrade():
    op.drop_table("catalog_version")
