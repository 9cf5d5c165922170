"""Who is calling: API bearer tokens (API_TOKENS="name:token[:scope],...") for the API, the SSO
proxy's user header for the dashboard.

Every token has a scope: ``read``, ``reports`` (read + requesting and reading reports) or
``write`` (everything; a ``name:token`` entry without a scope, as before scopes existed). What an
API request needs is decided in one place, :func:`required_scope`: a view marked with
:func:`requires_scope` needs that scope; any other GET/HEAD is a read and every other method a
write. On the routes that say so (:func:`takes_api_key`: OpenFeature's, whose protocol names the
header) the token may come as ``X-API-Key: <token>`` instead."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, g, request

from webapp.errors import AppError, detail

_UNSET = object()
TOKEN_RE = re.compile(r"[\x21-\x7e]{16,200}")
NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
READ, REPORTS, WRITE = "read", "reports", "write"
# What each scope may do: a scope grants the kinds of request listed.
GRANTS: dict[str, frozenset[str]] = {
    READ: frozenset({READ}),
    REPORTS: frozenset({READ, REPORTS}),
    WRITE: frozenset({READ, REPORTS, WRITE}),
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_KEY_HEADER = "X-API-Key"
V = TypeVar("V", bound=Callable)


class TokenTable(dict[str, str]):
    """{token: name}, with each token's scope in ``scopes`` ({token: scope})."""

    def __init__(self) -> None:
        super().__init__()
        self.scopes: dict[str, str] = {}


def parse_tokens(raw: str) -> TokenTable:
    """``name:token[:scope],...`` -> {token: name} (scopes in ``.scopes``); ValueError naming the
    first malformed entry (a typo must never silently turn authentication off, nor widen a
    scope). Without a scope an entry is ``write``, as it was before scopes existed. A token may
    contain ``:``; then its entry must end with its scope (``name:to:ken:write``)."""
    tokens = TokenTable()
    for position, item in enumerate(filter(None, (i.strip() for i in raw.split(","))), 1):
        name, sep, rest = (part.strip() for part in item.partition(":"))
        token, scope = rest, WRITE
        if rest.count(":"):
            token, _, scope = (part.strip() for part in rest.rpartition(":"))
            if scope not in GRANTS:
                shown = repr(scope) if len(scope) <= 8 else "the part after its last ':'"  # (never a token)
                raise ValueError(
                    f"API_TOKENS entry {position}: {shown} is not a scope (one of read, reports, "
                    "write: name:token:scope; a token containing ':' must be followed by its scope)"
                )
        if not sep or not NAME_RE.fullmatch(name) or not TOKEN_RE.fullmatch(token):
            raise ValueError(
                f"API_TOKENS entry {position} is not name:token or name:token:scope (a name of "
                "letters, digits and ._@-, a token of 16 to 200 visible ASCII characters, a "
                "scope of read, reports or write)"
            )
        if token in tokens:
            raise ValueError(f"API_TOKENS entry {position} repeats a token")
        tokens[token], tokens.scopes[token] = name, scope
    return tokens


def requires_scope(scope: str) -> Callable[[V], V]:
    """Mark an API view as needing ``scope`` whatever its method: ``READ`` for a POST that only
    reads (a batch lookup), ``REPORTS`` for the report routes."""
    if scope not in GRANTS:
        raise ValueError(f"unknown scope {scope!r}")

    def mark(view: V) -> V:
        view.required_scope = scope  # type: ignore[attr-defined]  # (functools.wraps copies it outwards)
        return view

    return mark


def takes_api_key(view: V) -> V:
    """Mark an API view as also taking its token in ``X-API-Key`` (beside ``Authorization:
    Bearer``): OFREP's routes, whose protocol names that header."""
    view.takes_api_key = True  # type: ignore[attr-defined]
    return view


def _marked(view: Callable | None, attribute: str) -> object:
    """What ``view`` (or a view it wraps) is marked with, else None."""
    while view is not None:
        marked = getattr(view, attribute, None)
        if marked is not None:
            return marked
        view = getattr(view, "__wrapped__", None)
    return None


def required_scope(view: Callable | None, method: str) -> str:
    """The one rule: what a request to ``view`` with ``method`` needs."""
    marked = _marked(view, "required_scope")
    if marked is not None:
        return str(marked)
    return READ if method in SAFE_METHODS else WRITE


def _takes_api_key() -> bool:
    return bool(_marked(current_app.view_functions.get(request.endpoint or ""), "takes_api_key"))


def _api_key() -> str | None:
    """The request's ``X-API-Key`` where its view takes one, else None."""
    return request.headers.get(API_KEY_HEADER) if _takes_api_key() else None


def _tokens() -> TokenTable:
    tokens: TokenTable = current_app.extensions["api_tokens"]
    return tokens


def token_name() -> str | None:
    """The name of the API token this request carries, if it is a known one (memoised on g)."""
    cached = g.get("api_client", _UNSET)
    if cached is not _UNSET:
        return cached if isinstance(cached, str) else None
    tokens = _tokens()
    known = match_token(request.headers.get("Authorization", ""), tokens, _api_key())
    g.api_client, g.api_scope = (tokens[known], tokens.scopes[known]) if known is not None else (None, None)
    name: str | None = g.api_client
    return name


def token_scope() -> str | None:
    """The scope of the API token this request carries (None without a known token)."""
    token_name()
    scope: str | None = g.get("api_scope")
    return scope


def match_token(authorization: str, tokens: dict[str, str], api_key: str | None = None) -> str | None:
    """The known token in an ``Authorization: Bearer <token>`` value and/or in ``api_key`` (the
    ``X-API-Key`` header, where a route takes it; None when absent), or None. Every credential
    presented must be that known token: an unknown one beside a good one refuses the request.
    (Compared in constant time against every known token.)"""
    presented = []
    if authorization:
        scheme, _, token = authorization.partition(" ")
        presented.append(token if scheme.lower() == "bearer" else "")
    if api_key is not None:
        presented.append(api_key)
    found = [_known(offered.strip(), tokens) for offered in presented]
    return found[0] if found and all(known == found[0] for known in found) else None


def _known(offered: str, tokens: dict[str, str]) -> str | None:
    found = None
    if offered:
        encoded = offered.encode()
        for known in tokens:
            if hmac.compare_digest(known.encode(), encoded):
                found = known
    return found


def name_for(authorization: str, tokens: dict[str, str], api_key: str | None = None) -> str | None:
    """The name of the known token in an ``Authorization: Bearer <token>`` value (or ``api_key``:
    see :func:`match_token`), or None. (Any known token may read, whatever its scope: the hot
    path needs no more than this.)"""
    known = match_token(authorization, tokens, api_key)
    return tokens[known] if known is not None else None


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
        raise AppError(
            "Sign in through the company SSO to use the dashboard: this request came without "
            "a signed-in user.",
            code="unauthorized",
            status=401,
        )


def identify_client() -> None:
    """before_request of the API blueprints: refuse a missing or unknown token when
    API_TOKENS is configured (401), and a token whose scope does not cover the request (403)."""
    if not _tokens():
        return
    if getattr(current_app.view_functions.get(request.endpoint or ""), "signed_link", False):
        return  # the link itself is the credential (a signed, expiring token in its path)
    if token_name() is None:
        api_key = _api_key()
        message = (
            "unknown API token"
            if request.headers.get("Authorization") or api_key
            else "an API token is required: Authorization: Bearer <token>"
            + (f" (or {API_KEY_HEADER}: <token>)" if _takes_api_key() else "")
        )
        raise AppError(message, code="unauthorized", status=401)
    scope = token_scope() or READ
    needed = required_scope(current_app.view_functions.get(request.endpoint or ""), request.method)
    if needed not in GRANTS[scope]:
        raise AppError(
            f"this API token's scope is {scope!r}; {request.method} {request.path} needs "
            f"{needed!r}{' (or write)' if needed == REPORTS else ''}",
            [
                detail(
                    "Authorization",
                    f"scope {scope} does not allow this request",
                    code="scope_insufficient",
                    scope=scope,
                    required=needed,
                )
            ],
            code="forbidden",
            status=403,
        )
