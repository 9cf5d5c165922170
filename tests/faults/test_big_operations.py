"""Big operations never stall the service: other clients' reads and writes (per-user changes to
the very segment being filled) all answer, without a server error, during a 1M-id bulk add and
the deletion of the resulting 1M-member segment, and their p99 stays within 10 times their p99
with no operation running, measured in the same test (a stall is a request waiting for a whole
operation: seconds). The absolute figure (p99 < 100 ms) is `make bench`'s (bulk, others' p99
during a bulk add): a shared 2-core test machine cannot hold it. Real gunicorn
(gunicorn.conf.py) and a real `flask worker`."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
MILLION = 1_000_000
pytestmark = [pytest.mark.slow, pytest.mark.long]


def call(base: str, method: str, path: str, body: object = None, timeout: float = 120) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def stack(app, redis_app, committed_db, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": app.config["REDIS_URL"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "REPORTS_DIR": str(tmp_path),
        "FLASK_APP": "wsgi",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "4",
        "RATELIMIT_ENABLED": "false",
    }
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in (
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            [sys.executable, "-m", "flask", "worker"],
        )
    ]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()
            break
        except OSError:
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
    try:
        yield base
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


BASELINE_SECONDS = 3  # the same clients with no operation running first: the machine's own tail
MARGIN = 10


def test_others_are_not_stalled_during_a_1m_bulk_add_and_delete(stack):
    base = stack
    assert call(base, "POST", "/api/v1/segments", {"slug": "HUGE"})[0] == 201
    assert call(base, "POST", "/api/v1/segments", {"slug": "OTHER"})[0] == 201
    latencies: list[float] = []
    errors: list[int] = []
    stop = threading.Event()

    def other_client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            user = rng.randint(1, 2 * MILLION)
            for method, path, body in (
                ("POST", f"/api/v1/users/{user}/segments", {"add": ["HUGE", "OTHER"]}),
                ("GET", f"/api/v1/users/{user}/segments", None),
                ("POST", f"/api/v1/users/{user}/segments", {"del": ["HUGE"]}),
            ):
                started = time.perf_counter()
                status, _ = call(base, method, path, body, timeout=10)
                latencies.append(time.perf_counter() - started)
                if status >= 500:
                    errors.append(status)
            time.sleep(0.02)

    clients = [threading.Thread(target=other_client, args=(seed,)) for seed in range(3)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(BASELINE_SECONDS)
        status, operation = call(
            base, "POST", "/api/v1/segments/HUGE/members", {"user_ids": list(range(1, MILLION + 1))}
        )
        assert status == 202, operation
        during_add, started = len(latencies), time.perf_counter()
        _wait_finished(base, operation["status_url"])
        added = time.perf_counter() - started
        status, deleted = call(base, "DELETE", "/api/v1/segments/HUGE")
        assert status == 200 and deleted["members_removed"] >= MILLION - 10_000, deleted
        _wait_finished(base, deleted["operation_url"])
        print(
            f"1M bulk add {added:.1f} s, delete of its members {time.perf_counter() - started - added:.1f} s"
        )
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    idle, measured = sorted(latencies[:during_add]), sorted(latencies[during_add:])
    p99, bar = measured[int(len(measured) * 0.99)], idle[int(len(idle) * 0.99)]
    print(
        f"others during the 1M add and delete: {len(measured)} requests, "
        f"p50 {measured[len(measured) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"with no operation: {len(idle)} requests, p99 {bar * 1000:.1f} ms"
    )
    assert not errors and len(measured) > 200 and len(idle) > 20
    assert p99 < MARGIN * bar, (
        f"others' p99 {p99 * 1000:.0f} ms over {len(measured)} requests, {bar * 1000:.0f} ms with no operation"
    )


def _wait_finished(base: str, status_url: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    path = status_url.split("://", 1)[1].split("/", 1)[1]
    while True:
        status, body = call(base, "GET", "/" + path)
        if body.get("status") == "finished":
            return
        assert body.get("status") != "failed", body
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
