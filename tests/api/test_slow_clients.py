"""Slow clients: twelve uploads at 1 byte/s must not starve gunicorn's sync workers.

Runs the production layout for real: gunicorn with gunicorn.conf.py behind nginx configured
exactly as docker-compose.yml's ``nginx_conf`` (which buffers whole request bodies), and shows
the condition is real by starving a bare gunicorn the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from devstack.net import free_port, wait_http
from tests.support.processes import gunicorn_env

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SLOW_CLIENTS = 12

pytestmark = [
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (.ci/run installs it)"),
]


def _healthz_seconds(port: int, limit: float = 5.0) -> float:
    started = time.perf_counter()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=limit).read()
    except OSError:
        return limit
    return time.perf_counter() - started


def _slow_uploaders(port: int) -> list[socket.socket]:
    """Sockets that announced a 1,000-byte JSON body and send it one byte at a time."""
    sockets = []
    for _ in range(SLOW_CLIENTS):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(
            b"POST /api/v1/segments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        sockets.append(conn)
    return sockets


def _trickle(sockets: list[socket.socket], seconds: int) -> None:
    for _ in range(seconds):
        for conn in sockets:
            with contextlib.suppress(OSError):  # a peer that gave up
                conn.send(b" ")
        time.sleep(1)


@pytest.fixture
def gunicorn(app, redis_app, tmp_path):
    port = free_port()
    env = gunicorn_env(app, app.config["REDIS_URL"], tmp_path, port)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def nginx(gunicorn, tmp_path):
    """docker-compose.yml's nginx configuration, pointed at this test's gunicorn."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = free_port()
    conf = compose["configs"]["nginx_conf"]["content"].replace("$$", "$")
    conf = conf.replace("server web:8000;", f"server 127.0.0.1:{gunicorn};").replace(
        "listen 8080", f"listen 127.0.0.1:{port}"
    )
    names = os.environ["TRUSTED_HOSTS"].replace(",", " ")  # (compose fills in its TRUSTED_HOSTS)
    conf = re.sub(r"\$\{TRUSTED_HOSTS[^}]*\}", names, conf)
    temp = tmp_path / "nginx"
    temp.mkdir()
    paths = "".join(
        f"  {name}_temp_path {temp}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {", f"http {{\n{paths}  access_log off;\n", 1)
    (tmp_path / "nginx.conf").write_text(
        f"user root;\nerror_log {temp}/error.log;\npid {temp}/nginx.pid;\n{conf}"
    )
    process = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_slow_uploaders_starve_a_bare_gunicorn(gunicorn):
    """The condition is real: with the bodies still arriving, sync workers are all busy."""
    sockets = _slow_uploaders(gunicorn)
    try:
        _trickle(sockets, 2)
        assert _healthz_seconds(gunicorn, limit=3.0) >= 3.0
    finally:
        for conn in sockets:
            conn.close()


def test_behind_nginx_healthz_answers(nginx):
    """Every probe is answered while the slow uploads go on (a bare gunicorn answers none:
    above). How fast is a machine's figure, not asserted here."""
    sockets = _slow_uploaders(nginx)
    try:
        _trickle(sockets, 2)
        limit = 30.0  # a hang, not a latency: the bare gunicorn never answers
        timings = [_healthz_seconds(nginx, limit=limit) for _ in range(5)]
        assert max(timings) < limit, f"a /healthz behind nginx was not answered: {timings}"
    finally:
        for conn in sockets:
            conn.close()


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/api/v1/segments?q=" + "x" * 20_000, {}, 414),
        ("/api/v1/segments", {"X-Big": "y" * 20_000}, 431),
    ],
)
def test_what_nginx_refuses_is_the_json_envelope(nginx, path, headers, status):
    """Gunicorn's and nginx's own 414/431 pages are HTML; through the entry point they are JSON."""
    request = urllib.request.Request(f"http://127.0.0.1:{nginx}{path}", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == status and refused.value.headers.get_content_type() == "application/json"
    error = json.loads(refused.value.read())["error"]
    assert set(error) == {"code", "message", "details"}


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.evil.example"])
def test_nginx_drops_a_host_not_ours(nginx, host):
    """Issue 22: nginx forwarded any Host; its server_name is now TRUSTED_HOSTS and every other
    name is closed without an answer (444), before the app would refuse it (400)."""
    with socket.create_connection(("127.0.0.1", nginx), timeout=5) as conn:
        conn.sendall(f"GET /api/v1/segments HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert conn.recv(100) == b""
    with socket.create_connection(("127.0.0.1", nginx), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
