"""Issue 24, items 1 and 2, in Chromium at 1366 and 390 px: a group join on the segment page
says how many known users will leave and join before saving, asks to confirm, and history then
shows exactly those numbers; the live rollout preview knows the group's true limit."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits
from tests.support.moves import history_counts, shown_moves
from webapp.models.enums import Action

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
KNOWN = range(1, 2001)


def test_a_group_join_says_who_leaves_and_joins_and_history_agrees(
    page, live_server, live_api, shots, redis_app
):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_10", "rollout_percent": 10})
    live_api("POST", "/api/v1/segments", {"slug": "KNOWN_USERS"})
    live_api("POST", "/api/v1/segments/KNOWN_USERS/members", {"user_ids": list(KNOWN)})
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_20", "rollout_percent": 20, "exclusion_group": "DISCOUNTS"},
    )
    live_api("POST", "/api/v1/segments/AVITO_DISCOUNT_10/members", {"user_ids": list(range(5, 2001, 40))})
    for viewport in (DESKTOP, MOBILE):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/AVITO_DISCOUNT_10")
        settings = page.locator("#segment-settings")
        settings.get_by_label("Exclusion group").fill("DISCOUNTS")
        live = page.locator("#rollout-impact")
        expect(live).to_contain_text("would leave")
        expect(page.locator("#rollout-limit")).to_contain_text(
            "Group DISCOUNTS: at most 80% for this segment"
        )
        shown = shown_moves(live.inner_text(), "AVITO_DISCOUNT_10", "would")
        settings.get_by_role("button", name="Save").click()
        confirm = page.locator("#impact-confirm")
        expect(confirm).to_contain_text("Saving moves users:")
        leave, join = shown_moves(confirm.inner_text(), "AVITO_DISCOUNT_10")
        assert leave > 0 and join > 0
        assert shown == (leave, join)  # the live preview said the same before Save
        assert_fits(page, f"impact confirmation at {viewport['width']}")
        if viewport is DESKTOP:
            page.locator("#segment-settings").scroll_into_view_if_needed()
            shots(page, "impact-confirm")
            # Cancel (a second look), then back and forward: nothing was saved.
            confirm.get_by_role("link", name="Cancel").click()
            expect(page.locator("#segment-settings").get_by_label("Exclusion group")).to_have_value("")
            page.go_back()
            page.go_forward()
            expect(page.locator("#segment-settings")).to_be_visible()
            assert live_api("GET", "/api/v1/segments/AVITO_DISCOUNT_10")["exclusion_group"] is None
            continue
        since = datetime.now(UTC)
        confirm.get_by_role("button", name=re.compile("^Confirm")).click()
        expect(page.locator("#flash")).to_contain_text("AVITO_DISCOUNT_10 saved.")
        assert live_api("GET", "/api/v1/segments/AVITO_DISCOUNT_10")["exclusion_group"] == "DISCOUNTS"
        counts = history_counts(redis_app, KNOWN, since)
        assert (
            counts[("AVITO_DISCOUNT_10", Action.REMOVED)],
            counts[("AVITO_DISCOUNT_10", Action.ADDED)],
        ) == (
            leave,
            join,
        )
        # A second save of the same values moves nobody: saved at once, no question.
        settings.get_by_role("button", name="Save").click()
        expect(page.locator("#flash")).to_contain_text("AVITO_DISCOUNT_10 saved.")
        expect(page.locator("#impact-confirm")).to_have_count(0)


def test_the_live_preview_knows_the_group_limit(page, live_server, live_api, shots, console_errors):
    console_errors.allow(422)
    live_api(
        "POST", "/api/v1/segments", {"slug": "LIMIT_A", "rollout_percent": 10, "exclusion_group": "LIMITS"}
    )
    live_api(
        "POST", "/api/v1/segments", {"slug": "LIMIT_B", "rollout_percent": 10, "exclusion_group": "LIMITS"}
    )
    for viewport in (MOBILE, DESKTOP):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/LIMIT_A")
        field = page.locator("#segment-settings").get_by_label("Automatic rollout, % of all users")
        field.fill("95")
        preview = page.locator("#rollout-preview")
        expect(preview).to_contain_text("at most 90% for this segment (it holds 10%, 80% is free); its")
        expect(preview).not_to_contain_text("of user ids")
        assert_fits(page, f"limit at {viewport['width']}")
        if viewport is MOBILE:
            page.locator("#rollout-preview").scroll_into_view_if_needed()
            shots(page, "rollout-limit-390")
        field.fill("90")
        expect(preview).to_contain_text(
            "Group LIMITS: at most 90% for this segment (it holds 10%, 80% is free; LIMIT_B 10%)"
        )
        expect(preview).to_contain_text("of user ids 1–10,000 fall in")
    page.locator("#segment-settings").get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text("LIMIT_A saved.")
    # the saved form in place (typing into the one being replaced would be lost with it)
    expect(page.locator("#rollout-preview")).to_contain_text("(it holds 90%, 0% is free; LIMIT_B 10%)")
    field = page.locator("#segment-settings").get_by_label("Automatic rollout, % of all users")
    field.fill("90.01")
    expect(page.locator("#rollout-preview")).to_contain_text(
        "at most 90% for this segment (it holds 90%, 0% is free)"
    )
    page.locator("#segment-settings").get_by_role("button", name="Save").click()
    expect(page.locator("#rollout_percent-error, #segment-settings .field-error").first).to_contain_text(
        "at most 90% for this segment (it holds 90%, 0% is free)"
    )
    shots(page, "rollout-limit")
