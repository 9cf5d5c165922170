"""The migrations create exactly the schema the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from webapp.extensions import db


def test_migrations_match_models(app):
    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)
    assert diff == []


def test_expected_indexes_exist(app):
    import sqlalchemy as sa

    with app.app_context():
        names = {ix["name"] for table in ("memberships", "membership_events", "segments")
                 for ix in sa.inspect(db.engine).get_indexes(table)}
    assert {"ix_memberships_segment_user", "ix_memberships_expires_at", "uq_segments_live_slug",
            "ix_membership_events_user_occurred", "ix_membership_events_occurred"} <= names
