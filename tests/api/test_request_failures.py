"""Failures while a request runs, each real: a SQL error that aborts the request's transaction,
the request's own PostgreSQL backend terminated (``pg_terminate_backend``) mid-request, while it
commits, or while it sat in the pool. Every answer is a proper one — the JSON envelope, the
dashboard page or its htmx fragment, with the security headers, a request id and a request-log
line — through the Flask test client and through a real gunicorn (whose own bare "Internal Server
Error" page is what a failure escaping Flask gets)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from devstack.net import free_port
from tests.support.failing_routes import register
from tests.support.processes import gunicorn_env, wait_for
from webapp.http.security import HEADERS
from webapp.platform.extensions import db

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"page": ("/_fail", {}), "htmx": ("/_fail", {"HX-Request": "true"}), "api": ("/api/v1/_fail", {})}
# route -> (status, API error code, words the page says, Retry-After expected)
EXPECTED = {
    "sql-error": (500, "internal_error", "Internal server error", False),
    "sql-error-in-write": (500, "internal_error", "Internal server error", False),
    "killed": (503, "database_unavailable", "database is unavailable", True),
    "killed-in-write": (503, "database_unavailable", "database is unavailable", True),
    "killed-at-commit": (500, "outcome_unknown", "may or may not", False),
}


@pytest.fixture
def failing_app(app_on, committed_db):
    return register(app_on(REQUEST_LOG="stderr"))


def log_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith('{"time"'):
            lines.append(json.loads(line))
    return lines


def check_answer(kind: str, route: str, status: int, headers, body: bytes) -> None:
    want_status, code, words, retry_after = EXPECTED[route]
    shown = f"{kind} {route}: {status} {dict(headers)} {body[:300]!r}"
    assert status == want_status, shown
    for name, value in HEADERS.items():
        assert headers.get(name) == value, shown
    assert headers.get("X-Request-ID"), shown
    assert ("Retry-After" in headers) == retry_after, shown
    assert b"Traceback" not in body and b"Internal Server Error" not in body, shown
    if kind == "api":
        assert headers.get("Content-Type", "").startswith("application/json"), shown
        error = json.loads(body)["error"]
        assert error["code"] == code and error["message"] and error["details"] == [], shown
        return
    assert headers.get("Content-Type", "").startswith("text/html"), shown
    assert words.lower() in body.decode().lower(), shown
    if kind == "htmx":
        assert headers.get("HX-Retarget") == "#flash" and b"<html" not in body, shown
    else:
        assert b"<html" in body and b"</html>" in body, shown


@pytest.mark.parametrize("route", list(EXPECTED))
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_failure_inside_a_request_gets_a_proper_answer(failing_app, capfd, kind, route):
    prefix, headers = KINDS[kind]
    client = failing_app.test_client()
    capfd.readouterr()
    response = client.get(f"{prefix}/{route}", headers={**headers, "X-Request-ID": f"t-{kind}-{route}"})
    check_answer(kind, route, response.status_code, response.headers, response.get_data())
    logged = [line for line in log_lines(capfd.readouterr().err) if line["request_id"] == f"t-{kind}-{route}"]
    assert [(line["path"], line["status"]) for line in logged] == [
        (f"{prefix}/{route}", response.status_code)
    ]
    # The session and the pool are usable afterwards: the next request is answered normally.
    again = client.get("/api/v1/_fail/pid")
    assert again.status_code == 200, again.get_data()[:300]
    with failing_app.app_context():
        assert db.engine.pool.checkedout() == 0  # nothing leaked from the pool


@pytest.mark.parametrize("prefix", ["/_fail", "/api/v1/_fail"])
def test_a_connection_killed_after_the_last_statement_keeps_the_views_answer(failing_app, prefix):
    """The teardown's rollback finds the connection gone: it never raises out of Flask (the WSGI
    server's bare page), the view's answer stands and the pool keeps no dead connection."""
    client = failing_app.test_client()
    for _ in range(3):
        response = client.get(f"{prefix}/killed-after-read")
        assert response.status_code == 200 and response.json == {"read": True}
        assert response.headers["X-Frame-Options"] == "DENY"
    assert client.get("/api/v1/_fail/pid").status_code == 200
    with failing_app.app_context():
        assert db.engine.pool.checkedout() == 0


def test_a_connection_lost_while_committing_is_not_retried_as_unavailable(failing_app):
    """A write whose COMMIT may have reached the server is never called safe to retry."""
    response = failing_app.test_client().post("/api/v1/_fail/killed-at-commit", json={})
    assert response.status_code == 500 and response.json["error"]["code"] == "outcome_unknown"
    assert "Retry-After" not in response.headers
    assert "Idempotency-Key" in response.json["error"]["message"]


@pytest.mark.parametrize("pre_ping", [True, False])
def test_a_pooled_connection_killed_between_requests(app_on, committed_db, pre_ping):
    """Killed while it sat in the pool: with pre-ping (the default) the pool replaces it and the
    request succeeds; without, the first statement finds it dead: 503 database_unavailable."""
    options = {"pool_pre_ping": pre_ping, "pool_recycle": 1800, "pool_size": 1}
    failing_app = register(app_on(SQLALCHEMY_ENGINE_OPTIONS=options))
    client = failing_app.test_client()
    first = client.get("/api/v1/_fail/pid")
    assert first.status_code == 200
    engine = sa.create_engine(failing_app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first.json["pid"]}
        ).scalar()
    engine.dispose()
    second = client.get("/api/v1/_fail/pid")
    if pre_ping:
        assert second.status_code == 200 and second.json["pid"] != first.json["pid"]
    else:
        check_answer("api", "killed", second.status_code, second.headers, second.get_data())
        assert client.get("/api/v1/_fail/pid").status_code == 200  # and the pool recovers


# -- through a real gunicorn --------------------------------------------------------------------


def fetch(url: str, headers: dict[str, str]) -> tuple[int, object, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def gunicorn_base(app, committed_db, private_redis, tmp_path):
    port = free_port()
    env = gunicorn_env(app, private_redis.url, tmp_path, port, REQUEST_LOG="stderr")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "tests.support.failing_wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return fetch(base + "/healthz", {})[0] == 200
            except OSError:
                return False

        assert wait_for(up, 30, 0.1), log_path.read_text()[-2000:]
        yield base, log_path
    finally:
        process.terminate()
        process.wait(30)


def test_under_gunicorn_no_failure_gets_the_bare_page(gunicorn_base):
    base, log_path = gunicorn_base
    asked = []
    for route in EXPECTED:
        for kind, (prefix, headers) in KINDS.items():
            for attempt in range(3):  # both workers, and a worker after its earlier failures
                rid = f"g-{kind}-{route}-{attempt}"
                status, got, body = fetch(f"{base}{prefix}/{route}", {**headers, "X-Request-ID": rid})
                check_answer(kind, route, status, got, body)
                asked.append((rid, f"{prefix}/{route}", status))
    for kind, (prefix, headers) in KINDS.items():
        for attempt in range(3):  # the teardown's rollback on the killed connection: the view's 200 stands
            rid = f"g-{kind}-read-{attempt}"
            status, got, body = fetch(f"{base}{prefix}/killed-after-read", {**headers, "X-Request-ID": rid})
            assert status == 200 and json.loads(body) == {"read": True}, (kind, status, body[:300])
            assert got.get("X-Frame-Options") == "DENY"
            asked.append((rid, f"{prefix}/killed-after-read", 200))
    assert fetch(base + "/api/v1/_fail/pid", {})[0] == 200

    def logged() -> dict[str, tuple[str, int]]:
        return {
            line["request_id"]: (line["path"], line["status"]) for line in log_lines(log_path.read_text())
        }

    wait_for(lambda: all(rid in logged() for rid, _, _ in asked), 5, 0.1)
    found = logged()
    assert {rid: found.get(rid) for rid, _, _ in asked} == {
        rid: (path, status) for rid, path, status in asked
    }
    assert "Error handling request" not in log_path.read_text()  # gunicorn's own: a failure escaped Flask


def test_with_the_database_down_every_answer_is_still_flasks(app_on):
    """Nothing listens where the database should be: API reads are 503 database_unavailable,
    a dashboard page is a plain 503 page, and a 404 page (whose jobs strip reads the database)
    falls back to a plain page: all with the security headers."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    down = app_on(DATABASE_URL=url)
    client = down.test_client()
    response = client.get("/api/v1/segments")
    check_answer("api", "killed", response.status_code, response.headers, response.get_data())
    for headers in ({}, {"HX-Request": "true"}):
        page = client.get("/", headers=headers)
        check_answer("htmx" if headers else "page", "killed", page.status_code, page.headers, page.get_data())
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert b"<html" in missing.data and missing.headers["X-Frame-Options"] == "DENY"
