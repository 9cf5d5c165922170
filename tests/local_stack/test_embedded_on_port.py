"""``embedded.start_postgres_on_port``: the bench's own server, on TCP with the settings given."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest

from devstack import embedded
from devstack.net import free_port

pytestmark = pytest.mark.slow


def test_serves_on_its_port_with_its_settings_and_stops() -> None:
    # Not under pytest's temp root (0700 as root, see tests/conftest.py's database_url).
    base = Path(tempfile.mkdtemp(prefix="segments-onport-"))
    base.chmod(0o755)
    port = free_port()
    try:
        # (pg_prewarm: the bench's and docker-compose's autoprewarm; a library missing from the
        # build would keep the server from starting)
        url = embedded.start_postgres_on_port(
            base / "pg",
            port,
            {"shared_buffers": "48MB", "work_mem": "7MB", "shared_preload_libraries": "pg_prewarm"},
        )
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as conn:
            shown = conn.execute(
                "SELECT current_setting('shared_buffers'), current_setting('work_mem'), "
                "current_setting('listen_addresses'), current_setting('unix_socket_directories'), "
                "current_setting('shared_preload_libraries'), "
                "current_setting('pg_prewarm.autoprewarm')"
            ).fetchone()
        assert shown == ("48MB", "7MB", "127.0.0.1", "", "pg_prewarm", "on")  # TCP only: no unix socket
        pid = int((base / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
        assert embedded.stop_postgres(base / "pg")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            )
    finally:
        embedded.stop_postgres(base / "pg")
        shutil.rmtree(base, ignore_errors=True)
