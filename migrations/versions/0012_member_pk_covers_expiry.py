"""memberships' primary key INCLUDEs expires_at: the hot read (and the batch lookup) of a
user's memberships is an index-only scan, with no heap page per row

Revision ID: 0012_member_pk_covers_expiry
Revises: 0011_bulk_remove_replace
"""
from alembic import op

revision = "0012_member_pk_covers_expiry"
down_revision = "0011_bulk_remove_replace"
branch_labels = None
depends_on = None


def _swap(include: str) -> None:
    op.execute(f"CREATE UNIQUE INDEX pk_memberships_next ON memberships (user_id, segment_id) {include}")
    op.execute("ALTER TABLE memberships DROP CONSTRAINT pk_memberships, "
               "ADD CONSTRAINT pk_memberships PRIMARY KEY USING INDEX pk_memberships_next")


def upgrade():
    _swap("INCLUDE (expires_at)")


def downgrade():
    _swap("")
