"""Request handling: API tokens and scopes, security headers and trusted hosts, the
request's transaction, and the hot read served in front of Flask."""
