"""Webhooks' pure parts: Standard Webhooks signatures (verified by the ``standardwebhooks``
package), and the SSRF decision taken before any connection: these tests never open a
connection to a non-loopback address (a guard on socket.connect fails the test if one is tried)."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from webapp.services.webhooks import delivery, outbound, signing

LOOPBACK = outbound.Policy(allow_loopback=True)
PRODUCTION = outbound.Policy()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection attempt beyond 127.0.0.0/8 fails the test before a packet leaves."""
    real_connect = socket.socket.connect
    tried: list[object] = []

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            tried.append(address)
            raise AssertionError(f"a connection to {address} was attempted")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert tried == []


def test_signatures_verify_with_the_standard_webhooks_library():
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    body = json.dumps({"type": "segment.created", "data": {"segment": "A"}}).encode()
    now = int(time.time())
    headers = signing.headers([secret], "msg_1", now, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["data"] == {"segment": "A"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_during_a_rotation_both_secrets_sign():
    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"type":"x"}'
    headers = signing.headers([new, old], "msg_2", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://127.0.0.1:9/",  # loopback, not allowed in production
        "http://[::1]/",
        "http://localhost/",
    ],
)
def test_internal_destinations_are_refused_before_connecting(url):
    def resolver(host, port):  # localhost: what a resolver would answer, no lookup made
        return ["127.0.0.1"]

    with pytest.raises(outbound.Refused):
        outbound.destination(url, PRODUCTION, resolver)


def test_a_name_resolving_to_an_internal_address_is_refused():
    # DNS rebinding: a public-looking name whose answer is internal; one bad address refuses all
    with pytest.raises(outbound.Refused, match="private"):
        outbound.destination(
            "https://hooks.example.com/x", PRODUCTION, lambda h, p: ["93.184.216.34", "10.1.2.3"]
        )
    with pytest.raises(outbound.Refused, match="link-local|routable"):
        outbound.destination("https://hooks.example.com/x", PRODUCTION, lambda h, p: ["169.254.169.254"])


def test_a_public_address_is_allowed_and_the_connection_would_go_to_the_checked_address():
    target = outbound.destination(
        "https://hooks.example.com:8443/in?x=1", PRODUCTION, lambda h, p: ["93.184.216.34"]
    )
    assert (target.address, target.host, target.port, target.path) == (
        "93.184.216.34",
        "hooks.example.com",
        8443,
        "/in?x=1",
    )


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "http://user:pw@example.com/", "file:///etc/passwd", "http:///nohost", "x"]
)
def test_only_plain_http_urls(url):
    with pytest.raises(outbound.Refused):
        outbound.parse(url)


def test_loopback_is_allowed_only_when_configured():
    assert outbound.destination("http://127.0.0.1:1/", LOOPBACK).address == "127.0.0.1"
    with pytest.raises(outbound.Refused):
        outbound.check_literal("http://127.0.0.1:1/", PRODUCTION)
    with pytest.raises(outbound.Refused):
        outbound.check_literal("http://10.0.0.1/", LOOPBACK)  # loopback allowed, private still not


def test_a_refused_delivery_records_the_refusal_without_connecting():
    claim = delivery.Claim(1, 1, 1, "msg_x", "http://169.254.169.254/", [signing.new_secret()], b"{}")
    outcome = delivery.send(claim, delivery.Settings(policy=PRODUCTION))
    assert outcome.status is None and outcome.error.startswith("refused:")


class _Server:
    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _serve(status=200, body=b"", headers=(), delay=0.0):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(delay)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return _Server(Handler)


def test_redirects_are_not_followed_and_the_answer_read_is_capped():
    redirect = _serve(302, b"", [("location", "http://169.254.169.254/")])
    big = _serve(200, b"x" * 1_000_000)
    try:
        target = outbound.destination(redirect.url + "/", LOOPBACK)
        assert outbound.post(target, b"{}", {}, timeout=2, max_bytes=1000).status == 302
        answer = outbound.post(
            outbound.destination(big.url + "/", LOOPBACK), b"{}", {}, timeout=2, max_bytes=1000
        )
        assert answer.status == 200 and len(answer.body) == 1000
    finally:
        redirect.close()
        big.close()


def test_a_hanging_receiver_is_given_up_at_the_deadline():
    slow = _serve(200, b"late", delay=3)
    try:
        started = time.monotonic()
        with pytest.raises(OSError):
            outbound.post(
                outbound.destination(slow.url + "/", LOOPBACK), b"{}", {}, timeout=0.5, max_bytes=100
            )
        assert time.monotonic() - started < 1.5
    finally:
        slow.close()


def test_backoff_doubles_up_to_its_cap():
    settings = delivery.Settings(retry_base=5, retry_max=60)
    waits = [delivery.backoff(n, settings) for n in range(1, 8)]
    assert 4.5 <= waits[0] <= 5.5 and 9 <= waits[1] <= 11 and 18 <= waits[2] <= 22
    assert all(w <= 66 for w in waits) and waits[-1] >= 54
