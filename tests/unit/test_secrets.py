"""8. Secrets: a production app (DATABASE_URL given, not testing) refuses to start with a weak
SECRET_KEY or a malformed API_TOKENS."""

from __future__ import annotations

import pytest

from webapp import create_app


def production(app, **overrides):
    """The test app's settings as production has them: DATABASE_URL set, TESTING off."""
    config = {**app.config, "TESTING": False, **overrides}
    assert config["DATABASE_URL"]
    return config


@pytest.mark.parametrize("key", ["", "short-secret", "x" * 31], ids=["empty", "short", "31_chars"])
def test_production_app_refuses_a_missing_or_short_secret_key(app, key):
    with pytest.raises((RuntimeError, ValueError), match="SECRET_KEY"):
        create_app(production(app, SECRET_KEY=key))


@pytest.mark.parametrize(
    "tokens",
    [
        "tok-without-name",
        "svc:short",
        "svc:token-a-0123456789abcdef,",
        "a:token-a-0123456789abcdef,b:token-a-0123456789abcdef",
    ],
    ids=["no_name", "short_token", "trailing_comma_ok", "repeated_token"],
)
def test_production_app_refuses_malformed_api_tokens(app, tokens):
    if tokens.endswith(","):  # an empty trailing entry is not an error: the one token is well formed
        assert create_app(production(app, API_TOKENS=tokens)).extensions["api_tokens"]
        return
    with pytest.raises((RuntimeError, ValueError), match="API_TOKENS"):
        create_app(production(app, API_TOKENS=tokens))


def test_a_strong_key_and_good_tokens_start(app):
    built = create_app(production(app, SECRET_KEY="k" * 48, API_TOKENS="svc-a:token-a-0123456789abcdef"))
    assert built.extensions["api_tokens"] == {"token-a-0123456789abcdef": "svc-a"}
