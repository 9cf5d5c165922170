"""Browser-facing protections: security headers on every response, session cookie flags,
and the real scheme/client behind a trusted reverse proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted

from webapp.errors import AppError, detail
from webapp.telemetry.observability import PROBES

# htmx and Swagger UI run from /static; htmx injects its indicator <style>, hence 'unsafe-inline' for styles.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


UNTRUSTED_HOST = "segments.untrusted_host"  # environ key: the Host a request came with, not one of ours
# PROBES (webapp.telemetry.observability): answered whatever the Host (load balancers, docker)


class TrustedHosts:
    """WSGI layer inside ProxyFix (so it sees the host the proxy forwarded) and in front of the
    hot path: a request whose Host is not one of ``TRUSTED_HOSTS`` goes on with the first
    trusted name in its place and the one it came with under ``UNTRUSTED_HOST``. The app
    refuses it before anything else runs (``refuse_untrusted_host``, 400), the probes excepted;
    and whatever part answers, no link is ever built from a Host header the service does not
    own (a ``Location``, ``status_url``, ``link_to_file`` or redirect to ``http://evil.example/``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], hosts: list[str]) -> None:
        self.app, self.hosts, self.stand_in = app, hosts, hosts[0].lstrip(".")
        self.known: dict[str, bool] = {}  # Host header -> trusted (bounded: junk headers are not kept)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        trusted = self.known.get(host)
        if trusted is None:
            trusted = host_is_trusted(host, self.hosts)
            if len(self.known) < 256:
                self.known[host] = trusted
        if not trusted:
            environ[UNTRUSTED_HOST] = host
            environ["HTTP_HOST"] = self.stand_in
        return self.app(environ, start_response)


def refuse_untrusted_host() -> None:
    """before_request, right after the request id: 400 for a Host the service does not own
    (the JSON envelope on the API and the seed's paths, the error page on the dashboard)."""
    host = request.environ.get(UNTRUSTED_HOST)
    if host is not None and request.endpoint not in PROBES:
        shown = str(host)[:100]
        raise AppError(
            f"this service does not answer for the host {shown!r}",
            [
                detail(
                    "Host",
                    "not one of the service's host names (TRUSTED_HOSTS)",
                    code="host_untrusted",
                    value=shown,
                )
            ],
            code="untrusted_host",
            status=400,
        )


def init_trusted_hosts(app: Flask) -> None:
    """Flask's TRUSTED_HOSTS, enforced in front of every part of the app (the hot path too)
    and for every route but the probes."""
    app.wsgi_app = TrustedHosts(app.wsgi_app, app.config["TRUSTED_HOSTS"])  # type: ignore[method-assign]
    app.before_request(refuse_untrusted_host)


class SessionCookies(SecureCookieSessionInterface):
    """The session cookie is ``Secure`` whenever the request came over https; a request
    without one (every API call) gets an empty session without building a signer."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or bool(app.config["SESSION_COOKIE_SECURE"])

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def init_security(app: Flask) -> None:
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.session_interface = SessionCookies()
    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies:  # X-Forwarded-For/-Proto/-Host set by that many proxies in front of us are believed
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)  # type: ignore[method-assign]

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
