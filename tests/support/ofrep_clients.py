"""Fixtures of the OpenFeature client tests: the app served on a free 127.0.0.1 port (no worker:
evaluation reads only), and the Node packages of ``tests/ofrep_clients`` (the official
JavaScript SDKs and OFREP providers, pinned by its package-lock.json), installed by ``.ci/run``
with ``npm ci`` and, should they be missing or older than the lockfile, by the first test that
needs them. Without ``node`` those tests are skipped, saying why. Registered by tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import served

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "ofrep_clients"
NODE = os.environ.get("NODE", shutil.which("node") or "/usr/bin/node")


@pytest.fixture
def ofrep_server(redis_app, committed_db) -> Iterator[str]:
    """The test app (committed data) served on a free port; tables emptied afterwards."""
    with served(redis_app) as url:
        yield url


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """``tests/ofrep_clients`` with its locked packages installed (``npm ci`` when
    ``node_modules`` is missing or older than ``package-lock.json``)."""
    if not Path(NODE).exists():
        pytest.skip("node is not installed: the JavaScript OpenFeature clients need it (.ci/run installs it)")
    installed = CLIENTS / "node_modules" / ".package-lock.json"
    lock = CLIENTS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm") or "/usr/bin/npm"
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENTS, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (
            f"npm ci in {CLIENTS} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return CLIENTS


def run_node(script: str, *args: str, timeout: float = 60) -> str:
    """``node <script> <args>`` in tests/ofrep_clients: its standard output (it must succeed)."""
    done = subprocess.run([NODE, script, *args], cwd=CLIENTS, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"node {script} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout
