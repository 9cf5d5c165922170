"""Optional bearer tokens for the API (API_TOKENS="name:token,..."): who is calling."""
from __future__ import annotations

import hmac

from flask import current_app, g, request

from webapp.errors import AppError

_UNSET = object()


def _tokens() -> dict[str, str]:
    raw = current_app.config.get("API_TOKENS") or ""
    pairs = (item.split(":", 1) for item in raw.split(",") if ":" in item)
    return {token.strip(): name.strip() for name, token in pairs if token.strip()}


def token_name() -> str | None:
    """The name of the API token this request carries, if it is a known one (memoised on g)."""
    cached = g.get("api_client", _UNSET)
    if cached is not _UNSET:
        return cached
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    name = None
    if scheme.lower() == "bearer" and token:
        for known, candidate in _tokens().items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                name = candidate
    g.api_client = name
    return name


def identify_client() -> None:
    """before_request of the API blueprints: refuse a missing or unknown token when
    API_TOKENS is configured."""
    if _tokens() and token_name() is None:
        message = "unknown API token" if request.headers.get("Authorization") else \
            "an API token is required: Authorization: Bearer <token>"
        raise AppError(message, code="unauthorized", status=401)
