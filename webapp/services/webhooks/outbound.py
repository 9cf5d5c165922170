"""Outbound calls that cannot be turned against the inside (SSRF): the destination's addresses are
resolved once, each checked (private, loopback, link-local, multicast, reserved, unspecified and
shared/CGNAT ranges are refused unless allowed), and the connection is made to the checked address
itself, so a DNS answer that changes between the check and the connection (rebinding) cannot slip
an internal address in. Redirects are never followed (a 3xx is the answer), the response read is
capped and every step has a deadline.

The decision (:func:`destination`) is taken before any socket is opened, so tests prove a refusal
without sending a packet anywhere."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not "private" to ipaddress


class Refused(Exception):
    """The destination is not allowed (or not a valid URL); nothing was sent. ``kind``: why, as
    a word (``loopback``, ``private``, ``internal``, ``url``, ``unresolved``)."""

    def __init__(self, message: str, kind: str = "internal"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Policy:
    allow_loopback: bool = False  # the tests' receivers on 127.0.0.1
    allow_private: bool = False  # a deployment whose receivers are on its private network


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the connection goes to


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the cap
    seconds: float


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_address(raw: str, policy: Policy) -> Address:
    """The address, or :class:`Refused` saying why it may not be called."""
    address = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        if policy.allow_loopback:
            return address
        raise Refused(f"{address} is a loopback address", "loopback")
    if address.is_unspecified or address.is_multicast or address.is_link_local:
        raise Refused(f"{address} is not a routable unicast address")
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        if policy.allow_private:
            return address
        raise Refused(f"{address} is a private address", "private")
    if address.is_reserved or not address.is_global:
        raise Refused(f"{address} is a reserved address")
    return address


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path+query) of an http(s) URL without credentials; Refused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}", "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("the URL must be http:// or https:// with a host", "url")
    if parts.username is not None or parts.password is not None:
        raise Refused("the URL must not carry credentials", "url")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def check_literal(url: str, policy: Policy) -> None:
    """What can be checked without resolving a name (a subscription being saved): the URL's
    shape, and its host when it is an address or ``localhost``."""
    _, host, _, _ = parse(url)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        check_address("127.0.0.1", policy)
        return
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    check_address(host, policy)


def destination(url: str, policy: Policy, resolve: Resolver = system_resolver) -> Target:
    """Where a call to ``url`` would connect: its host resolved, every address checked (one bad
    address refuses the lot: the resolver could hand out either). Nothing is connected."""
    scheme, host, port, path = parse(url)
    try:
        literal: str | None = str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise Refused(f"{host} does not resolve: {exc}", "unresolved") from None
    if not addresses:
        raise Refused(f"{host} has no address", "unresolved")
    checked = [check_address(a, policy) for a in addresses]
    return Target(scheme, host, port, path, str(checked[0]))


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever ``host`` would resolve to now."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._target = target

    def connect(self) -> None:
        self.sock = socket.create_connection((self._target.address, self._target.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._target.scheme == "https":
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=self._target.host)


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    max_bytes: int,
) -> Answer:
    """POST ``body`` to the checked ``target``: ``timeout`` bounds the whole call (connect,
    send, every read), at most ``max_bytes`` of the answer are read, no redirect is followed.
    Raises OSError / http.client.HTTPException on a transport failure or the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    conn = _PinnedConnection(target, timeout)
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={
                **headers,
                "content-type": "application/json",
                "user-agent": "Segments-Webhooks/1",
                "connection": "close",
            },
        )
        sock = conn.sock  # (getresponse lets go of it when the answer ends the connection)
        if sock is not None:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
        response = conn.getresponse()
        chunks: list[bytes] = []
        left = max_bytes
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the receiver's answer took too long")
            if sock is not None:
                sock.settimeout(remaining)
            chunk = response.read1(min(left, 16_384))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return Answer(response.status, b"".join(chunks), time.monotonic() - started)
    finally:
        conn.close()
