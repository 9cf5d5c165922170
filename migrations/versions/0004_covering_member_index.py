"""members index covers expires_at (index-only member counts and lists)

Revision ID: 0004_covering_member_index
Revises: 0003_history_no_fk
Create Date: 2026-11-24 19:45:00

"""
from alembic import op


revision = '0004_covering_member_index'
down_revision = '0003_history_no_fk'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index('ix_memberships_segment_user', table_name='memberships')
    op.create_index('ix_memberships_segment_user', 'memberships', ['segment_id', 'user_id'],
                    postgresql_include=['expires_at'])


def downgrade():
    op.drop_index('ix_memberships_segment_user', table_name='memberships')
    op.create_index('ix_memberships_segment_user', 'memberships', ['segment_id', 'user_id'])
