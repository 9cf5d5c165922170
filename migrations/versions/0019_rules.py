"""Rules on segments (issue 29, stage 2): rule sets, their matches materialised per user.

- ``segments.rules``: the canonical rule set (webapp.services.targeting), NULL for a plain
  segment; ``segments.rules_version``: bumped on every change of rules, percentage or group of a
  rule segment (the re-evaluation operation works for one version); ``segments.rule_mode``: reads
  take the segment's coverage from ``rule_matches`` (false while a plain segment's first rules
  are still being evaluated, and for plain segments).
- ``rule_matches(user_id, segment_id, since)``: the user has stored traits, the segment's rules
  match them and the user's bucket is in the segment's rollout, as of the evaluation that wrote
  the row. Index (segment_id, user_id) for the operation's keyset walk. No foreign key (segments
  are never hard-deleted, as membership_events has none): an inserted row's check would take a
  KEY SHARE lock on the segment's row, which a rollout change holds FOR UPDATE, closing a wait
  cycle with the rule-set lock a trait write holds (tests/services/test_rule_deadlocks.py saw
  7), and a million rows of a re-evaluation would each pay the check.
- ``rollout_changes.rule_mode``: the segment answers by its rule matches from this change on.
- ``membership_events.reason`` also allows ``rule``.
- ``bulk_operations.rules_version``: the version a re-evaluation operation evaluates.

Revision ID: 0019_rules
Revises: 0018_traits
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019_rules"
down_revision = "0018_traits"
branch_labels = None
depends_on = None

OLD_REASONS = "'api', 'dashboard', 'ttl', 'segment_deleted', 'rollout', 'restored'"
NEW_REASONS = OLD_REASONS + ", 'rule'"


def upgrade():
    op.add_column("segments", sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("segments", sa.Column("rules_version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("segments", sa.Column("rule_mode", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column(
        "rollout_changes", sa.Column("rule_mode", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("bulk_operations", sa.Column("rules_version", sa.Integer(), nullable=True))
    op.create_table(
        "rule_matches",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "segment_id", name=op.f("pk_rule_matches")),
    )
    op.create_index("ix_rule_matches_segment_user", "rule_matches", ["segment_id", "user_id"])
    op.execute("ALTER TABLE membership_events DROP CONSTRAINT ck_membership_events_reason_valid")
    op.execute(
        f"ALTER TABLE membership_events ADD CONSTRAINT ck_membership_events_reason_valid CHECK (reason IN ({NEW_REASONS}))"
    )


def downgrade():
    op.execute("DELETE FROM membership_events WHERE reason = 'rule'")
    op.execute("ALTER TABLE membership_events DROP CONSTRAINT ck_membership_events_reason_valid")
    op.execute(
        f"ALTER TABLE membership_events ADD CONSTRAINT ck_membership_events_reason_valid CHECK (reason IN ({OLD_REASONS}))"
    )
    op.drop_index("ix_rule_matches_segment_user", table_name="rule_matches")
    op.drop_table("rule_matches")
    op.drop_column("bulk_operations", "rules_version")
    op.drop_column("rollout_changes", "rule_mode")
    op.drop_column("segments", "rule_mode")
    op.drop_column("segments", "rules_version")
    op.drop_column("segments", "rules")
