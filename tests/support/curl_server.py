"""The app served for real ``curl`` processes (the README's and docs/api.md's examples), with
the status of every answer recorded: fixture ``curl_server``, registered by tests/conftest.py."""

from __future__ import annotations

import shutil
import threading

import pytest
from werkzeug.serving import make_server


class Recorded:
    """A WSGI wrapper that notes the status of every response (curl prints only the body)."""

    def __init__(self, app):
        self.app, self.statuses, self.calls = app, [], []

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            self.statuses.append(int(status.split()[0]))
            self.calls.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {status.split()[0]}")
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


@pytest.fixture
def curl_server(redis_app, committed_db):
    """The app on a free port of 127.0.0.1 (a threaded werkzeug server) for real ``curl``
    processes: yields ``("127.0.0.1:<port>", recorded)``, every answer's status recorded."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    recorded = Recorded(redis_app.wsgi_app)
    redis_app.wsgi_app = recorded  # type: ignore[method-assign]
    http = make_server("127.0.0.1", 0, redis_app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{http.server_port}", recorded
    finally:
        http.shutdown()
        thread.join(10)
        redis_app.wsgi_app = recorded.app  # type: ignore[method-assign]
