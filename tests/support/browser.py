"""Fixtures of the browser tests (marker ``browser``): Playwright's Python package driving
Debian's chromium against the app served on 127.0.0.1 by a real HTTP server, with a real
``flask worker`` (never `playwright install`). Registered by tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from tests.support.processes import end_process_tree, served, wait_for

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    """Browser tests skip, saying why, on a machine without chromium (.ci/run installs it)."""
    if Path(CHROMIUM).exists() or shutil.which("chromium"):
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(
                pytest.mark.skip(reason="Debian's chromium is not installed (.ci/run installs it)")
            )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture
def live_server(redis_app, committed_db):
    """The app on a free 127.0.0.1 port with a real `flask worker` process running its jobs;
    tables emptied afterwards."""
    app = redis_app
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": app.config["REDIS_URL"],
        "REPORTS_DIR": app.config["REPORTS_DIR"],
        "SECRET_KEY": app.config["SECRET_KEY"],
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with served(app) as base:
            # a test's waits for a job count from a worker that listens (it boots while the server
            # starts; on a loaded machine it took more than a report test's 15 s wait: seen in CI)
            redis = Redis.from_url(app.config["REDIS_URL"])
            try:
                ready = wait_for(lambda: worker.poll() is not None or redis.scard("rq:workers") > 0, 120, 0.1)
            finally:
                redis.close()
            assert ready and worker.poll() is None, (
                f"the live server's worker did not start ({worker.poll()})"
            )
            yield base
    finally:
        end_process_tree(worker)  # the worker and its children (horse, scheduler), whatever happened


@pytest.fixture
def live_api(page, live_server):
    """Set the scene through the JSON API, from the browser's own request context."""

    def call(method, path, body=None):
        response = page.request.fetch(live_server + path, method=method, data=body)
        assert response.ok, response.text()
        return response.json()

    return call


@pytest.fixture
def shots(tmp_path):
    """Where screenshots go: docs/screenshots with SCREENSHOTS=1 (make screenshots), else tmp."""
    folder = ROOT / "docs" / "screenshots" if os.environ.get("SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str):
        path = folder / f"{name}.png"
        htmx_settled(page)
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a real picture, not an empty page
        return path

    return take


def htmx_settled(page) -> None:
    """Wait until no htmx request is in flight nor a swap settling (a second click's answer may
    still replace what the test is about to look at)."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """A laptop-sized window (1366 px wide); the mobile checks resize to 390 px."""
    return {**browser_context_args, "viewport": {"width": 1366, "height": 900}}


@pytest.fixture(autouse=True)
def console_errors(request):
    """No browser console error and no uncaught script error on any page a test visits.
    A test that submits an invalid form on purpose calls ``console_errors.allow(422)``: Chromium
    logs every 4xx answer to a script request as "Failed to load resource", and the dashboard
    answers a form with problems with 422 (the form and its problems, swapped into the page)."""
    if "page" not in request.fixturenames:
        yield None
        return
    page = request.getfixturevalue("page")
    seen = ConsoleLog()
    page.on("console", lambda message: seen.add(message.type, message.text, message.location.get("url", "")))
    page.on("pageerror", lambda error: seen.add("pageerror", str(error), ""))
    yield seen
    assert not seen.unexpected(), f"browser console errors: {seen.unexpected()}"


class ConsoleLog:
    def __init__(self):
        self.errors: list[str] = []
        self.allowed: set[int] = set()

    def add(self, kind: str, text: str, url: str) -> None:
        if kind in ("error", "pageerror"):
            self.errors.append(f"{text} ({url})" if url else text)

    def allow(self, *statuses: int) -> None:
        self.allowed.update(statuses)

    def unexpected(self) -> list[str]:
        """The errors not allowed. An aborted htmx request is not an error of ours: the segment
        page's parts abort a refresh that a newer one supersedes (hx-sync="this:replace"), and
        htmx logs each abort as two errors, "htmx:afterRequest" then "htmx:sendAbort" (a failed
        request logs "htmx:sendError", a timeout "htmx:timeout": those still count)."""
        aborts = sum(e.startswith("htmx:sendAbort") for e in self.errors)
        left = []
        for e in self.errors:
            if e.startswith("htmx:sendAbort"):
                continue
            if e.startswith("htmx:afterRequest") and aborts:
                aborts -= 1
                continue
            if not any(
                e.startswith(f"Failed to load resource: the server responded with a status of {s} ")
                for s in self.allowed
            ):
                left.append(e)
        return left
