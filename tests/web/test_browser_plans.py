"""Exclusion groups, scheduled rollout changes, the activity log and reach, in a real browser
(Debian chromium), at 1366 and 390 px."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SSO_USER = "pm@example.com"
SIDEWAYS = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
def signed_in(page):
    """Every request carries the SSO proxy's user header, as behind the real proxy."""
    page.set_extra_http_headers({"X-Forwarded-Email": SSO_USER})
    return page


def no_sideways_scroll(page):
    assert page.evaluate(SIDEWAYS) <= 0, f"{page.url} scrolls sideways at {page.viewport_size['width']} px"


def at_widths(page, shots, name):
    for width, suffix in ((1366, ""), (390, "-mobile")):
        page.set_viewport_size({"width": width, "height": 900 if width > 400 else 844})
        no_sideways_scroll(page)
        shots(page, name + suffix)
    page.set_viewport_size({"width": 1366, "height": 900})


def test_group_page_shows_how_the_100_percent_is_shared(signed_in, live_server, live_api, shots):
    page = signed_in
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_30", "rollout_percent": 30, "exclusion_group": "DISCOUNTS"},
    )
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_50", "rollout_percent": 50, "exclusion_group": "DISCOUNTS"},
    )
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_5", "rollout_percent": 5, "exclusion_group": "DISCOUNTS"},
    )
    page.goto(live_server + "/")
    page.get_by_role("link", name="Groups").click()
    expect(page.locator("h1")).to_have_text("Exclusion groups")
    expect(page.locator(".group-card")).to_contain_text("85% used")
    page.get_by_role("link", name="DISCOUNTS").click()
    bar = page.locator(".group-bar")
    expect(bar.locator(".share")).to_have_count(3)
    widths = bar.locator(".share").evaluate_all("spans => spans.map(s => s.getBoundingClientRect().width)")
    total = bar.evaluate("b => b.getBoundingClientRect().width")
    assert sorted(round(w / total * 100) for w in widths) == [5, 30, 50]
    expect(page.locator("[data-free]")).to_have_text("15%")
    at_widths(page, shots, "group")
    page.locator(".group-legend").get_by_role("link", name="AVITO_DISCOUNT_30").click()
    expect(page.locator("#segment-reach")).to_contain_text("In exclusion group DISCOUNTS")


def test_schedule_add_and_cancel_twice_and_the_activity_log_names_the_sso_user(
    signed_in, live_server, live_api, shots, console_errors
):
    console_errors.allow(422)
    page = signed_in
    live_api(
        "POST", "/api/v1/segments", {"slug": "AVITO_VOICE_MESSAGES", "description": "Voice messages in chat"}
    )
    live_api("POST", "/api/v1/segments/AVITO_VOICE_MESSAGES/members", {"user_ids": list(range(1, 301))})
    page.goto(live_server + "/segments/AVITO_VOICE_MESSAGES")
    expect(page.locator("#segment-reach")).to_contain_text("300 explicit members, no rollout")
    # A rollout change: the activity log and the reach card follow without a reload.
    settings = page.locator("#segment-settings")
    settings.get_by_label("Automatic rollout, % of all users").fill("10")
    settings.get_by_role("button", name="Save").click()
    expect(page.locator("#segment-activity")).to_contain_text("Rollout changed from 0% to 10%")
    expect(page.locator("#segment-activity tbody tr").first).to_contain_text(SSO_USER)
    expect(page.locator("#segment-reach")).to_contain_text("10% of all users + 300 explicit")
    expect(page.locator("#segment-reach")).to_contain_text("of 300 known users")
    # A time in the past: the problem next to the field, in plain words.
    schedule = page.locator("#schedule")
    schedule.get_by_label("When (UTC)").fill(
        (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    )
    schedule.get_by_label("Rollout, %").fill("20")
    schedule.get_by_role("button", name="Schedule change").click()
    expect(page.locator("#schedule .field-error")).to_have_text(
        "That time has passed: choose a time in the future."
    )
    page.on("dialog", lambda dialog: dialog.accept())
    for n in range(2):
        when = (datetime.now(UTC) + timedelta(days=2 + n)).replace(hour=10, minute=0)
        schedule = page.locator("#schedule")
        schedule.get_by_label("When (UTC)").fill(when.strftime("%Y-%m-%dT%H:%M"))
        schedule.get_by_label("Rollout, %").fill(str(20 + n))
        schedule.get_by_role("button", name="Schedule change").click()
        expect(page.locator("#schedule .timeline li")).to_have_count(n + 1)
        expect(page.locator("#schedule .timeline li.pending")).to_have_count(1)
        expect(page.locator("#segment-activity")).to_contain_text(
            f"Scheduled {20 + n}% for {when.day} {when:%b %Y}, 10:00 UTC"
        )
        if n == 1:
            at_widths(page, shots, "segment-plans")
        page.locator("#schedule .timeline li.pending").get_by_role("button", name="Cancel").click()
        expect(page.locator("#schedule .timeline li.cancelled")).to_have_count(n + 1)
        expect(page.locator("#flash")).to_contain_text("is cancelled")
        expect(page.locator("#segment-activity")).to_contain_text(f"Cancelled the change to {20 + n}%")
    # Reloaded, the page agrees (nothing only in the browser).
    page.reload()
    expect(page.locator("#schedule .timeline li.cancelled")).to_have_count(2)
    expect(page.locator("#segment-activity")).to_contain_text(SSO_USER)


def test_segments_list_shows_reach_and_group_at_390(signed_in, live_server, live_api, shots):
    page = signed_in
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_30", "rollout_percent": 10, "exclusion_group": "DISCOUNTS"},
    )
    live_api("POST", "/api/v1/segments/AVITO_DISCOUNT_30/members", {"user_ids": [1, 2, 3, 4, 5, 6, 7]})
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_VOICE_MESSAGES"})
    live_api("POST", "/api/v1/segments/AVITO_VOICE_MESSAGES/members", {"user_ids": list(range(100, 1100))})
    page.goto(live_server + "/")
    row = page.locator("#segment-table tbody tr", has_text="AVITO_DISCOUNT_30")
    expect(row).to_contain_text("10% of all users + 7 explicit")
    expect(row).to_contain_text("of 1,007 known users")
    expect(row.get_by_role("link", name="DISCOUNTS")).to_be_visible()
    at_widths(page, shots, "segments-reach")
