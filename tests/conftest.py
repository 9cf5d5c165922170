"""Fixtures: one migrated test database per run, a rolled-back transaction per test.

``TEST_DATABASE_URL`` picks the database (default: PostgreSQL ``segments_test``, created
if missing). Tests marked ``smoke`` also run on SQLite (``make test`` does both).
Tests that need real commits (threads, workers, servers) use ``committed_db`` instead,
which empties the tables afterwards.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from flask_sqlalchemy.session import Session as FlaskSession

from webapp import create_app
from webapp.config import TestConfig
from webapp.extensions import cache, db

TABLES = ["membership_events", "rollout_exclusions", "memberships", "rollout_changes", "reports", "job_runs", "segments"]


def _database_url(tmp_root: Path) -> str:
    url = TestConfig.SQLALCHEMY_DATABASE_URI
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_root / 'segments-test.sqlite3'}"
    return url


def _ensure_postgres_database(url: str) -> None:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = _database_url(tmp_path_factory.mktemp("db"))
    if url.startswith("postgresql"):
        _ensure_postgres_database(url)
    return url


@pytest.fixture(scope="session")
def app(database_url, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    app = create_app({**{k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()},
                      "SQLALCHEMY_DATABASE_URI": database_url, "REPORTS_DIR": str(reports)})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()  # the migrations, not create_all: tests run on the real schema
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def is_postgres(app) -> bool:
    return app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")


class _BoundSession(FlaskSession):
    def get_bind(self, *args, **kwargs):
        return self.bind


@pytest.fixture
def db_session(app):
    """The app's db.session inside a transaction rolled back after the test."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            yield db.session
            db.session.remove()
            _empty_tables()
            cache.clear()
            return
        conn = db.engine.connect()
        outer = conn.begin()
        original = db.session
        # Background threads must not share this test's connection: jobs stay queued.
        app.config["RUN_LOCAL_JOBS"] = False
        db.session = db._make_scoped_session(
            {"class_": _BoundSession, "bind": conn, "join_transaction_mode": "create_savepoint"})
        try:
            yield db.session
        finally:
            db.session.remove()
            db.session = original
            outer.rollback()
            conn.close()
            cache.clear()
            app.config["RUN_LOCAL_JOBS"] = True


@pytest.fixture
def committed_db(app):
    """Real commits (for threads, workers, servers); every table is emptied afterwards."""
    with app.app_context():
        yield db.session
        db.session.remove()
        _empty_tables()
        cache.clear()


def _empty_tables() -> None:
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
def client(app, db_session):
    return app.test_client()


@pytest.fixture
def api(client):
    """A test client whose helpers speak JSON to /api/v1."""
    return ApiClient(client)


class ApiClient:
    def __init__(self, client):
        self.client = client

    def __getattr__(self, method):
        def call(path, json=None, **kwargs):
            return getattr(self.client, method)(f"/api/v1{path}", json=json, **kwargs)
        return call

    def segment(self, slug, **fields):
        response = self.post("/segments", {"slug": slug, **fields})
        assert response.status_code == 201, response.json
        return response.json

    def change(self, user_id, add=(), delete=(), headers=None, **extra):
        body = {"add": list(add), "del": list(delete), **extra}
        return self.post(f"/users/{user_id}/segments", body, headers=headers)

    def active(self, user_id):
        response = self.get(f"/users/{user_id}/segments")
        assert response.status_code == 200, response.json
        return response.json["segments"]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TEST_DATABASE_URL", "").startswith("sqlite"):
        for item in items:
            if "smoke" not in item.keywords:
                item.add_marker(pytest.mark.skip(reason="PostgreSQL-only (SQLite runs the smoke set)"))


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own (so it can be stopped mid-test)."""
    from tests.redis_server import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_on(app):
    """Build an app like the test app but with overrides, e.g. REDIS_URL of a private server."""
    def build(**overrides):
        return create_app({**app.config, **overrides})
    return build
