"""The browser SDK with the official OFREP web provider (@openfeature/web-sdk +
@openfeature/ofrep-web-provider, bundled by esbuild from tests/ofrep_clients) in Chromium
against a live server: bulk evaluation, then polling with the ETag, answered 304 while nothing
changes and 200 with a new ETag (and the new value) after a change."""

import subprocess

import pytest

pytestmark = pytest.mark.browser
PAGE = "/__ofrep_browser_test__/index.html"
BUNDLE = "/__ofrep_browser_test__/client.js"


@pytest.fixture(scope="session")
def web_bundle(node_clients):
    """The browser client bundled into one script (esbuild from the locked packages)."""
    out = node_clients / "dist" / "browser_client.js"
    esbuild = node_clients / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [
            esbuild,
            "browser_client.mjs",
            "--bundle",
            "--format=iife",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=node_clients,
        check=True,
        timeout=120,
    )
    return out.read_text()


def wait_until(page, predicate, timeout: float = 10.0):
    """Poll ``predicate`` while the page runs (Playwright's sync API delivers the page's events,
    such as responses, only during its own calls: hence ``wait_for_timeout``, not sleep)."""
    for _ in range(int(timeout / 0.05)):
        if value := predicate():
            return value
        page.wait_for_timeout(50)
    return predicate()


def test_bulk_evaluation_etag_and_304_then_a_change(page, ofrep_server, web_bundle, redis_app):
    api = redis_app.test_client()
    api.post("/api/v1/segments", json={"slug": "WEB_ON", "rollout_percent": 100})
    api.post("/api/v1/segments", json={"slug": "WEB_LATER"})
    # The page and its script come from the server's own origin (as an app bundling the SDK would
    # serve them), so the provider's requests are same-origin.
    page.route(
        f"{ofrep_server}{PAGE}",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<!doctype html><title>ofrep</title><script src="{BUNDLE}"></script>',
        ),
    )
    page.route(
        f"{ofrep_server}{BUNDLE}",
        lambda route: route.fulfill(content_type="text/javascript", body=web_bundle),
    )
    bulk = []
    page.on(
        "response",
        lambda r: (
            bulk.append((r.status, r.headers.get("etag")))
            if r.url.endswith("/ofrep/v1/evaluate/flags")
            else None
        ),
    )
    page.goto(f"{ofrep_server}{PAGE}")
    page.evaluate(f"segmentsOfrep.start({ofrep_server!r}, '7', 150)")
    assert page.evaluate("segmentsOfrep.details('WEB_ON')") == {
        "value": True,
        "reason": "SPLIT",
        "variant": "on",
        "errorCode": None,
        "flagMetadata": {"source": "rollout"},
    }
    later = page.evaluate("segmentsOfrep.details('WEB_LATER')")
    assert (later["value"], later["reason"], later["variant"]) == (False, "DEFAULT", "off")
    missing = page.evaluate("segmentsOfrep.details('NO_SUCH_SEGMENT')")
    assert (missing["value"], missing["errorCode"]) == (False, "FLAG_NOT_FOUND")
    wait_until(page, lambda: len(bulk) >= 3)  # the first answer, then polls
    first_tag = bulk[0][1]
    assert bulk[0][0] == 200 and first_tag
    assert {status for status, _ in bulk[1:]} == {304}  # nothing changed: not modified
    assert page.evaluate("segmentsOfrep.state.changes") == 0

    api.post("/api/v1/users/7/segments", json={"add": ["WEB_LATER"]})
    wait_until(page, lambda: page.evaluate("segmentsOfrep.details('WEB_LATER').value"))
    changed = [(status, tag) for status, tag in bulk if status == 200][1:]
    assert changed and changed[0][1] != first_tag  # a 200 with a new ETag
    assert page.evaluate("segmentsOfrep.details('WEB_LATER')")["reason"] == "TARGETING_MATCH"
    assert page.evaluate("segmentsOfrep.state.changes") >= 1
    count = len(bulk)
    wait_until(page, lambda: len(bulk) >= count + 2)
    assert {status for status, _ in bulk[count:]} == {304}  # and unchanged again since
    page.evaluate("segmentsOfrep.stop()")  # (no more polling)
