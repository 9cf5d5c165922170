"""The Webhooks page in a real browser (Debian chromium) at 1366 and 390 px: add a webhook
through the form (its secret shown once), an event delivered to a local receiver verifying the
signature shows in the last deliveries with its status code, redeliver it (same webhook-id),
pause and resume, rotate; nothing sticks out sideways on a phone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits
from tests.support.processes import wait_for
from tests.support.webhooks import receiver

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


@pytest.fixture(autouse=True)
def worker_may_call_loopback(monkeypatch):
    """The live server's worker sends to the test's receiver on 127.0.0.1 (and nowhere else)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "1")


@pytest.fixture
def hooks():
    with receiver() as state:
        yield state


def test_add_deliver_redeliver_pause_at_both_widths(hooks, page, live_server, live_api, shots):
    page.set_viewport_size(DESKTOP)
    page.goto(live_server + "/webhooks")
    form = page.locator("#webhook-form")
    form.get_by_label("Receiver's URL").fill(hooks.url("/browser"))
    form.get_by_role("button", name="Add webhook").click()
    secret = page.locator(".secret-value")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    hooks.secrets["/browser"] = secret.inner_text()
    shots(page, "webhooks-added")
    live_api("POST", "/api/v1/segments", {"slug": "SEEN_BY_A_HOOK"})
    wait_for(lambda: hooks.events("/browser"), 20)
    assert hooks.events("/browser")[0].data["segment"] == "SEEN_BY_A_HOOK" and hooks.rejected == []
    page.reload()
    expect(page.locator(".secret-value")).to_have_count(0)  # shown once
    row = page.locator("table.deliveries tbody tr").first
    expect(row).to_contain_text("segment.created")
    expect(row).to_contain_text("200")
    row.get_by_role("button", name="Redeliver").click()
    expect(page.locator("#flash")).to_contain_text("same webhook-id")
    wait_for(lambda: len(hooks.events("/browser")) == 2, 20)
    first, second = hooks.events("/browser")
    assert first.msg_id == second.msg_id  # receivers can dedupe
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".badge.webhook-paused")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".badge.webhook-active")).to_be_visible()
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.locator(".secret-value")).to_have_text(re.compile(r"^whsec_"))
    assert page.locator(".secret-value").inner_text() != hooks.secrets["/browser"]
    shots(page, "webhooks")
    page.set_viewport_size(MOBILE)
    page.reload()
    assert_fits(page, "/webhooks at 390 px")
    shots(page, "webhooks-mobile")
