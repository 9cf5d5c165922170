"""What caused a ``rule`` history row (issue 29: "the trait change or rule change that caused it").

- ``membership_events.cause``: ``traits`` (the user's traits changed) or ``rules`` (the
  segment's rules, percentage or group changed, or it was created or restored with rules, and a
  re-evaluation reached the user); NULL for every other reason.
- ``membership_events.cause_at``: that change's instant: the user's ``trait_events`` rows
  stamped then (their keys and actor), or the segment's ``segment_events`` rows stamped then
  (which change, by whom). The rule row itself is stamped when reads began to answer by it,
  which for a re-evaluation is later.

Both nullable and without a default: adding them rewrites no partition. The CHECK on
``cause`` reads every partition once under the ALTER's lock (as 0019's CHECK on ``reason``
did): a pass over the history table, seconds per ten million rows, during which writes wait.

Revision ID: 0020_history_cause
Revises: 0019_rules
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_history_cause"
down_revision = "0019_rules"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("membership_events", sa.Column("cause", sa.String(length=10), nullable=True))
    op.add_column("membership_events", sa.Column("cause_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "ALTER TABLE membership_events ADD CONSTRAINT ck_membership_events_cause_valid "
        "CHECK (cause IN ('traits', 'rules'))"
    )


def downgrade():
    op.execute("ALTER TABLE membership_events DROP CONSTRAINT ck_membership_events_cause_valid")
    op.drop_column("membership_events", "cause_at")
    op.drop_column("membership_events", "cause")
