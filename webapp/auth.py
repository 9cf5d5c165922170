"""Who is calling: API bearer tokens (API_TOKENS="name:token,...") for the API, the SSO
proxy's user header for the dashboard."""
from __future__ import annotations

import hmac
import re

from flask import current_app, g, request

from webapp.errors import AppError

_UNSET = object()
TOKEN_RE = re.compile(r"[\x21-\x7e]{16,200}")
NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,100}")


def parse_tokens(raw: str) -> dict[str, str]:
    """``name:token,...`` -> {token: name}; ValueError naming the first malformed entry
    (a typo must never silently turn authentication off)."""
    tokens: dict[str, str] = {}
    for position, item in enumerate(filter(None, (i.strip() for i in raw.split(","))), 1):
        name, sep, token = (part.strip() for part in item.partition(":"))
        if not sep or not NAME_RE.fullmatch(name) or not TOKEN_RE.fullmatch(token):
            raise ValueError(f"API_TOKENS entry {position} is not name:token (a name of letters, digits "
                             "and ._@-, a token of 16 to 200 visible ASCII characters)")
        if token in tokens:
            raise ValueError(f"API_TOKENS entry {position} repeats a token")
        tokens[token] = name
    return tokens


def _tokens() -> dict[str, str]:
    tokens: dict[str, str] = current_app.extensions["api_tokens"]
    return tokens


def token_name() -> str | None:
    """The name of the API token this request carries, if it is a known one (memoised on g)."""
    cached = g.get("api_client", _UNSET)
    if cached is not _UNSET:
        return cached if isinstance(cached, str) else None
    g.api_client = name = name_for(request.headers.get("Authorization", ""), _tokens())
    return name


def name_for(authorization: str, tokens: dict[str, str]) -> str | None:
    """The name of the known token in an ``Authorization: Bearer <token>`` value, or None
    (compared in constant time against every known token)."""
    scheme, _, token = authorization.partition(" ")
    name = None
    if scheme.lower() == "bearer" and token:
        for known, candidate in tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                name = candidate
    return name


def client_key() -> str:
    """Who a rate limit or an idempotency key counts against: the token's name, else the IP."""
    name = token_name()
    return f"token:{name}" if name else f"ip:{request.remote_addr}"


def dashboard_user() -> str | None:
    """The signed-in dashboard user as the SSO proxy in front of us names them (trusted
    header, DASHBOARD_USER_HEADER), or None."""
    raw = request.headers.get(current_app.config["DASHBOARD_USER_HEADER"], "")
    user = "".join(c for c in raw if c.isprintable()).strip()[:100]
    return user or None


def dashboard_actor() -> str:
    """Who a dashboard change is recorded as: the SSO user, or "dashboard" in open local mode."""
    return dashboard_user() or "dashboard"


def require_dashboard_user() -> None:
    """before_request of the dashboard: a user from the SSO header, unless DASHBOARD_OPEN."""
    if dashboard_user() is None and not current_app.config["DASHBOARD_OPEN"]:
        raise AppError("Sign in through the company SSO to use the dashboard: this request came without "
                       "a signed-in user.", code="unauthorized", status=401)


def identify_client() -> None:
    """before_request of the API blueprints: refuse a missing or unknown token when
    API_TOKENS is configured."""
    if _tokens() and token_name() is None:
        message = "unknown API token" if request.headers.get("Authorization") else \
            "an API token is required: Authorization: Bearer <token>"
        raise AppError(message, code="unauthorized", status=401)
