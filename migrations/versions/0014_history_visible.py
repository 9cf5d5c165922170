"""membership_events.visible: whether a stored change moved what reads answered.

Every explicit change is still stored (the history replay needs the explicit state: an explicit
add of a user already in through the rollout keeps them in after a rollout cut), but only a row
whose change flipped the user's membership is an entry of the history and of the reports
(webapp/services/membership_rule.py). Existing rows stay visible until ``flask history repair``
finds the ones that flipped nothing.

Revision ID: 0014_history_visible
Revises: 0013_bulk_ids_without_fk
"""
from alembic import op

revision = "0014_history_visible"
down_revision = "0013_bulk_ids_without_fk"
branch_labels = None
depends_on = None


def upgrade():
    # A constant default: no table rewrite on PostgreSQL 11+, partitions included.
    op.execute("ALTER TABLE membership_events ADD COLUMN visible boolean NOT NULL DEFAULT true")


def downgrade():
    op.execute("ALTER TABLE membership_events DROP COLUMN visible")
