import re

import pytest

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def csrf(client):
    """A valid CSRF token for this client's session (read from a rendered page)."""
    page = client.get("/").get_data(as_text=True)
    return CSRF_RE.search(page).group(1)


@pytest.fixture
def htmx(client, csrf):
    """Post like htmx does: HX-Request header plus the CSRF header from <body hx-headers>."""

    def post(path, data=None, **kwargs):
        headers = {"HX-Request": "true", "X-CSRFToken": csrf, **kwargs.pop("headers", {})}
        return client.post(path, data=data or {}, headers=headers, **kwargs)

    return post
