"""A real gunicorn (gunicorn.conf.py, 4 workers) and a real ``flask worker`` on the test's
database and Redis (fixture ``stack``, registered by tests/conftest.py), and a plain HTTP
client for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack.net import free_port, wait_http
from tests.support.processes import end_process_tree, gunicorn_env

ROOT = Path(__file__).resolve().parents[2]


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
    env = gunicorn_env(app, app.config["REDIS_URL"], tmp_path, port, FLASK_APP="wsgi", GUNICORN_WORKERS="4")
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in (
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            [sys.executable, "-m", "flask", "worker"],
        )
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", 120)  # a start, not a latency: a loaded 2-core machine is slow
        yield base
    finally:
        for process in processes:  # each with its children (gunicorn's workers, the worker's horse)
            end_process_tree(process)


def wait_finished(base: str, status_url: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    path = status_url.split("://", 1)[1].split("/", 1)[1]
    while True:
        status, body = call(base, "GET", "/" + path)
        if body.get("status") == "finished":
            return
        assert body.get("status") != "failed", body
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
