"""A real webhook receiver on 127.0.0.1 for the tests: every POST is verified with the
``standardwebhooks`` package (the reference implementation receivers use) against the secret
registered for its path; it can be down (503), hang, or answer slowly."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    msg_id: str
    type: str
    data: dict
    at: float  # time.time() when it arrived


@dataclass
class Receiver:
    port: int
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_...
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # bad signatures (none expected)
    down: set[str] = field(default_factory=set)  # paths answering 503
    hanging: set[str] = field(default_factory=set)  # paths that never answer (until stopped)
    attempts: dict[str, int] = field(default_factory=dict)  # path -> requests seen
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self, path: str | None = None) -> list[str]:
        with self.lock:
            return [r.msg_id for r in self.received if path is None or r.path == path]

    def events(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with receiver.lock:
                receiver.attempts[self.path] = receiver.attempts.get(self.path, 0) + 1
            if self.path in receiver.hanging:
                receiver.stop.wait(30)
                return
            if self.path in receiver.down:
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            secret = receiver.secrets.get(self.path)
            try:
                payload = Webhook(secret or "whsec_AA==").verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                with receiver.lock:
                    receiver.rejected.append(f"{self.path}: {exc}")
                self.send_response(401)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            with receiver.lock:
                receiver.received.append(
                    Received(
                        self.path, self.headers["webhook-id"], payload["type"], payload["data"], time.time()
                    )
                )
            answer = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver serving on a free port of 127.0.0.1 until the block ends."""
    state = Receiver(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
