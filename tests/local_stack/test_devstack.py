"""``python -m devstack`` end to end: embedded PostgreSQL and Redis, migrations, gunicorn,
the RQ worker and the scheduler; a job runs; a signal stops everything it started; a second
run on the same instance directory finds the data of the first. ``python -m devstack exec``
(make migrate, make worker, make scheduler) runs a command on the same servers; the app alone,
without the URLs, refuses to start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack.net import free_port

ROOT = Path(__file__).resolve().parents[2]
SLUG = "DEVSTACK_TEST"
pytestmark = pytest.mark.slow


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    instance: Path
    base: str
    log: Path

    def output(self) -> str:
        """Everything the stack printed so far (its banner scrolls by as the processes log)."""
        return self.log.read_text(errors="replace")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"devstack exited with {self.process.returncode}:\n{self.output()}"
            )
            # /healthz answers a moment before devstack, polling it too, prints its banner: a
            # signal sent in between stops the stack before it said how it started (seen in CI).
            if "Segments is up" in self.output() and _answers(self.base + "/healthz"):
                return
            time.sleep(0.2)
        pytest.fail(f"/healthz and the banner not there within {timeout:.0f} s:\n{self.output()}")

    def started_processes(self) -> list[psutil.Process]:
        """Everything the stack runs: its children (recursive), the postmaster and its backends, Redis."""
        processes = psutil.Process(self.process.pid).children(recursive=True)
        postmaster = psutil.Process(_first_line_pid(self.instance / "postgres" / "postmaster.pid"))
        processes += [postmaster, *postmaster.children(recursive=True)]
        processes.append(psutil.Process(_first_line_pid(self.instance / "redis" / "redis.pid")))
        return processes

    def stop(self, sig: signal.Signals, processes: list[psutil.Process]) -> None:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"devstack still running 20 s after {sig.name}:\n{self.output()}")
        assert code == 0, self.output()
        left = [p for p in processes if _alive(p)]
        assert not left, f"still running after {sig.name}: {[p.as_dict(['pid', 'cmdline']) for p in left]}"
        assert not (self.instance / "postgres" / "postmaster.pid").exists()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _first_line_pid(path: Path) -> int:
    return int(path.read_text().split("\n", 1)[0])


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def instance() -> Iterator[Path]:
    # Not under pytest's basetemp: as root, PostgreSQL runs as the user embedded_postgres, which
    # must traverse every parent directory, and each new pytest session resets
    # /tmp/pytest-of-root to mode 0700, which would lock a running server out of its data.
    base = Path(tempfile.mkdtemp(prefix="segments-devstack-"))
    base.chmod(0o755)
    yield base / "instance"
    shutil.rmtree(base, ignore_errors=True)


def local_env(instance: Path) -> dict[str, str]:
    """The environment of a developer's shell: no URLs, no secret, no host names."""
    unset = {"DATABASE_URL", "REDIS_URL", "REPORTS_DIR", "SECRET_KEY", "TRUSTED_HOSTS", "DASHBOARD_OPEN"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(SEGMENTS_INSTANCE=str(instance), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def stack(instance: Path, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    env = local_env(instance)
    env.update(SEGMENTS_INSTANCE=str(instance), HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    log = tmp_path / "devstack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    running = Stack(process, instance, f"http://127.0.0.1:{port}", log)
    try:
        yield running
    finally:
        if process.poll() is None:  # the test failed midway: still leave nothing behind
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_first_run_serves_runs_jobs_and_stops_everything_on_sigint(stack: Stack) -> None:
    stack.wait_healthy()
    status, body = stack.request("POST", "/api/v1/segments", {"slug": SLUG})
    assert status == 201, body
    status, report = stack.request("POST", "/api/v1/reports", {"kind": "segment_members", "segment": SLUG})
    assert status == 202, report
    deadline = time.monotonic() + 60
    while report["status"] != "finished":  # only the RQ worker process can finish it
        assert report["status"] in {"queued", "running"}, report
        assert time.monotonic() < deadline, f"report still {report['status']} after 60 s:\n{stack.output()}"
        time.sleep(0.3)
        status, report = stack.request("GET", f"/api/v1/reports/{report['id']}")
        assert status == 200, report
    with urllib.request.urlopen(stack.base + "/", timeout=5) as page:  # the dashboard, open locally
        assert page.status == 200 and b"Open local mode" in page.read()
    with urllib.request.urlopen(stack.base + "/fragments/jobs-status", timeout=5) as strip:
        assert b"Workers: 1 alive" in strip.read()  # the real worker, seen by the dashboard
    processes = stack.started_processes()
    assert len(processes) >= 6  # gunicorn master + 2 workers, worker, scheduler, postmaster, redis
    stack.stop(signal.SIGINT, processes)
    assert "Segments is up" in stack.output()


def test_second_run_reuses_the_data_and_stops_everything_on_sigterm(stack: Stack) -> None:
    if not (stack.instance / "postgres" / "PG_VERSION").exists():
        pytest.skip("runs after test_first_run_serves_runs_jobs_and_stops_everything_on_sigint")
    stack.wait_healthy()
    status, body = stack.request("GET", f"/api/v1/segments/{SLUG}")
    assert status == 200, body
    assert body["slug"] == SLUG
    stack.stop(signal.SIGTERM, stack.started_processes())
    assert "warm start" in stack.output()


# What `make migrate`, `make worker` and `make scheduler` run: the app reached through the local
# stack's servers (the first test's data), with the settings make run gives its processes.
PROBE = """
import json, os
from sqlalchemy import func, select
from webapp import create_app
from webapp.platform.extensions import db
from webapp.models import Segment
app = create_app()
with app.app_context():
    print(json.dumps({
        "segment": db.session.scalar(select(func.count()).where(Segment.slug == %r)),
        "database": os.environ["DATABASE_URL"],
        "redis": os.environ["REDIS_URL"],
        "open": app.config["DASHBOARD_OPEN"],
        "hosts": app.config["TRUSTED_HOSTS"],
    }))
"""


def test_exec_runs_a_command_on_the_local_servers_and_leaves_them_running(instance: Path) -> None:
    if not (instance / "postgres" / "PG_VERSION").exists():
        pytest.skip("runs after test_first_run_serves_runs_jobs_and_stops_everything_on_sigint")
    from devstack import embedded

    try:
        done = subprocess.run(
            [sys.executable, "-m", "devstack", "exec", sys.executable, "-c", PROBE % SLUG],
            cwd=ROOT,
            env=local_env(instance),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.splitlines()[-1])
        assert seen["segment"] == 1  # the database make run migrated and wrote to
        assert "/segments?host=" in seen["database"]  # the embedded server's socket
        assert seen["redis"].startswith("unix://")
        assert seen["open"] is True and seen["hosts"] == ["localhost", "127.0.0.1"]
        # The servers outlive the command, as they did when the app started them itself.
        assert _first_line_pid(instance / "postgres" / "postmaster.pid")
        assert embedded.start_redis(instance / "redis").started is False  # attached: still running
    finally:
        embedded.stop_redis(instance / "redis")
        embedded.stop_postgres(instance / "postgres")


def test_exec_without_a_command_says_how() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "exec"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "usage: python -m devstack exec COMMAND" in done.stdout


def test_the_app_alone_refuses_to_start_without_its_servers(tmp_path: Path) -> None:
    """A deploy that lost DATABASE_URL or REDIS_URL fails, naming the variable, instead of
    starting private servers of its own (as create_app once did)."""
    env = local_env(tmp_path / "instance")
    env.update(SECRET_KEY="k" * 48, TRUSTED_HOSTS="localhost")
    for given in (
        {},
        {"DATABASE_URL": "postgresql://db.example/segments"},
        {"REDIS_URL": "redis://r:6379/0"},
    ):
        done = subprocess.run(
            [sys.executable, "-c", "import wsgi"],
            cwd=ROOT,
            env={**env, **given},
            capture_output=True,
            text=True,
            timeout=60,
        )
        missing = [name for name in ("DATABASE_URL", "REDIS_URL") if name not in given]
        assert done.returncode != 0
        assert f"{' and '.join(missing)} must be set" in done.stderr and "make run" in done.stderr
    assert not (tmp_path / "instance").exists()  # nothing started, nothing written
