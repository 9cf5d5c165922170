"""The migrations create exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from webapp.platform.extensions import db
from webapp.services.history.partitions import is_partition


def test_migrations_match_models(app):
    with app.app_context(), db.engine.connect() as conn:
        # Monthly partitions of membership_events are created at run time, not declared.
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _: not (kind == "table" and is_partition(name)),
            },
        )
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_expected_indexes_exist(app):
    import sqlalchemy as sa

    with app.app_context():
        names = {
            ix["name"]
            for table in ("memberships", "membership_events", "segments")
            for ix in sa.inspect(db.engine).get_indexes(table)
        }
    assert {
        "ix_memberships_segment_user",
        "ix_memberships_expires_at",
        "uq_segments_live_slug",
        "ix_membership_events_user_occurred",
        "ix_membership_events_occurred",
    } <= names
