"""A quiet first run (issue 24, item 8): ``python -m devstack`` on a fresh instance directory
prints the banner first and complete — the URLs, the data folders, whether API_TOKENS locks the
API — then one line per process (the worker's jobs add their own outcome), no warning from a
dependency, and stops cleanly on SIGINT."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
LINE = re.compile(r"^(\w+)\s*\| (.*)$")
UNSET = {"DATABASE_URL", "REDIS_URL", "REPORTS_DIR", "SECRET_KEY", "TRUSTED_HOSTS", "DASHBOARD_OPEN"}


@pytest.fixture
def instance() -> Iterator[Path]:
    # (not under pytest's basetemp: PostgreSQL runs as the user embedded_postgres, see test_devstack)
    base = Path(tempfile.mkdtemp(prefix="segments-quiet-"))
    base.chmod(0o755)
    yield base / "instance"
    shutil.rmtree(base, ignore_errors=True)


def run_until_quiet(instance: Path, tmp_path: Path, settle: float, **env: str) -> tuple[str, int]:
    """Start the stack, wait for its banner and ``settle`` seconds more, SIGINT it: what it
    printed and its exit status."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in UNSET}
    environ.update(
        SEGMENTS_INSTANCE=str(instance), HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1", **env
    )
    log = tmp_path / "devstack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while "Each process's lines follow" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        time.sleep(settle)
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return log.read_text(errors="replace"), code


def test_banner_first_then_one_line_per_process_and_no_dependency_warnings(instance, tmp_path):
    output, code = run_until_quiet(
        instance, tmp_path, settle=8, API_TOKENS="ci:0123456789abcdef0123:read,deploy:fedcba9876543210fedc"
    )
    assert code == 0, output
    lines = [LINE.match(line) for line in output.splitlines()]
    assert all(lines), output
    names = [m[1] for m in lines if m]
    texts = [m[2] for m in lines if m]

    # The banner comes before any process's line, and says it all.
    up = next(i for i, text in enumerate(texts) if text.startswith("Segments is up"))
    assert set(names[:up]) == {"devstack"}, output
    banner = "\n".join(texts[up : up + 13])
    for expected in (
        "dashboard  http://127.0.0.1:",
        "open: DASHBOARD_OPEN is set",
        "locked by API_TOKENS, 2 tokens (ci: read, deploy: write): calls need Authorization: Bearer <token>",
        "API docs",
        f"data {instance / 'postgres'}",
        f"data {instance / 'redis'}",
        f"reports    {instance / 'reports'}",
        "Ctrl-C stops everything.",
    ):
        assert expected in banner, (expected, output)

    # Then one line per process at start (until the SIGINT), no dependency's chatter or warning.
    stop = next(i for i, text in enumerate(texts) if text.startswith("received SIGINT"))
    started = [
        (name, text) for name, text in zip(names[up:stop], texts[up:stop], strict=True) if name != "devstack"
    ]
    per_process = {
        name: [t for n, t in started if n == name] for name in ("migrate", "web", "worker", "scheduler")
    }
    migrations = len(list((ROOT / "migrations" / "versions").glob("[0-9]*.py")))
    assert (
        len(per_process["migrate"]) == 1 and f"migrations: {migrations} applied" in per_process["migrate"][0]
    )
    assert len(per_process["web"]) == 1 and per_process["web"][0].startswith("gunicorn ")
    assert (
        len(per_process["scheduler"]) == 1 and "scheduler: nightly maintenance" in per_process["scheduler"][0]
    )
    worker_start, *jobs = per_process["worker"]
    assert "worker: RQ" in worker_start
    assert all("INFO webapp.jobs.tasks" in job for job in jobs), jobs  # each job's own outcome only
    assert len(started) == 4 + len(jobs), started
    for noise in (
        "Warning",
        "alembic.runtime",
        "rq.worker",
        "rq_scheduler",
        "Booting worker",
        '"path": "/healthz"',
    ):
        assert noise not in output, (noise, output)

    # Ctrl-C: everything stopped, in order.
    tail = "\n".join(texts[stop:])
    assert "stopped web, worker, scheduler" in tail and "stopped PostgreSQL" in tail
    assert "SIGKILL" not in tail, output
