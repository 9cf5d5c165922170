"""The settings form's rollout preview in Chromium at 1366 and 390 px (issue 24 follow-up): it
describes the typed percentage AND group while typing, after a save that asks to confirm, after
the confirmed save and after a refused one (a second click too), and back/forward brings the
saved values with their own preview; a dashboard message goes at the user's next typing but not
at the page's own refreshes; the segments list keeps every column in view with a scheduled step."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.support.browser import htmx_settled
from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}

# The table is as wide as its frame: no column is cut off (the frame scrolls sideways otherwise,
# which assert_fits cannot see: the page itself does not scroll and the cut column has no control).
TABLE_OVERFLOW = """() => { const wrap = document.querySelector("#segment-table .table-wrap");
  return wrap.scrollWidth - wrap.clientWidth; }"""


def fall_in(text: str) -> int:
    found = re.search(r"([\d,]+) of user ids 1–10,000 fall in", text)
    assert found, text
    return int(found[1].replace(",", ""))


def card(page, full_page) -> None:
    """The settings card alone, beside the full-page screenshot (readable at 390 px)."""
    htmx_settled(page)
    page.locator("#segment-settings").screenshot(path=str(full_page.with_name(full_page.stem + "-card.png")))


def scene(live_api) -> None:
    live_api("POST", "/api/v1/segments", {"slug": "KNOWN_USERS"})
    live_api("POST", "/api/v1/segments/KNOWN_USERS/members", {"user_ids": list(range(1, 2001))})
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_DISCOUNT_30", "rollout_percent": 30, "exclusion_group": "DISCOUNTS"},
    )
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_50", "rollout_percent": 30})


def test_the_preview_follows_percent_and_group_through_confirm_refusal_and_history(
    page, live_server, live_api, shots, console_errors
):
    console_errors.allow(422)  # the refused save comes back as a 422 form
    scene(live_api)
    for viewport, tag in ((DESKTOP, "1366"), (MOBILE, "390")):
        live_api(
            "PATCH", "/api/v1/segments/AVITO_DISCOUNT_50", {"rollout_percent": 30, "exclusion_group": None}
        )
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/AVITO_DISCOUNT_50")
        settings = page.locator("#segment-settings")
        preview = page.locator("#rollout-preview")
        saved_30 = fall_in(preview.inner_text())
        percent = settings.get_by_label("Automatic rollout, % of all users")
        group = settings.get_by_label("Exclusion group")
        # typing: the percentage, then the group
        percent.fill("20")
        expect(preview).not_to_contain_text(f"{saved_30:,} of user ids")
        alone_20 = fall_in(preview.inner_text())
        group.fill("DISCOUNTS")
        expect(preview).to_contain_text("Group DISCOUNTS: at most 70% for this segment (70% is free")
        expect(preview).not_to_contain_text("No automatic rollout")
        grouped_20 = fall_in(preview.inner_text())
        assert abs(grouped_20 - 2000) < 300 and abs(alone_20 - 2000) < 300
        assert_fits(page, f"typed at {tag}")
        card(page, shots(page, f"settings-preview-typed-{tag}"))
        # Save: users leave, so the numbers are asked to confirm; the preview stays on 20 + DISCOUNTS
        settings.get_by_role("button", name="Save").click()
        expect(page.locator("#impact-confirm")).to_be_visible()
        expect(preview).to_contain_text("Group DISCOUNTS: at most 70% for this segment")
        assert fall_in(preview.inner_text()) == grouped_20
        expect(percent).to_have_value("20")
        expect(group).to_have_value("DISCOUNTS")
        assert_fits(page, f"confirm at {tag}")
        card(page, shots(page, f"settings-preview-confirm-{tag}"))
        page.locator("#impact-confirm").get_by_role("button", name=re.compile("^Confirm")).click()
        expect(page.locator("#flash")).to_contain_text("AVITO_DISCOUNT_50 saved.")
        expect(preview).to_contain_text("(it holds 20%, 50% is free; AVITO_DISCOUNT_30 30%)")
        assert fall_in(preview.inner_text()) == grouped_20
        # the message stays through the page's own refreshes (summary, recent changes, activity)
        page.wait_for_timeout(800)
        expect(page.locator("#flash")).to_contain_text("AVITO_DISCOUNT_50 saved.")
        # a refused value: its problem once, under the field, and no other value's count
        percent.fill("85")
        expect(preview).to_contain_text("at most 70% for this segment (it holds 20%, 50% is free)")
        expect(page.locator("#flash .alert")).to_have_count(0)  # typing cleared the saved message
        for _click in (1, 2):  # a second click answers the same
            settings.get_by_role("button", name="Save").click()
            htmx_settled(page)  # this click's answer in place, not the last one's
            error = page.locator("#rollout_percent-error")
            expect(error).to_contain_text(
                "Group DISCOUNTS: at most 70% for this segment (it holds 20%, 50% is free)"
            )
            expect(page.locator("#segment-settings .field-error")).to_have_count(1)
            expect(preview).not_to_contain_text("of user ids")
            expect(percent).to_have_value("85")
        assert_fits(page, f"refused at {tag}")
        card(page, shots(page, f"settings-preview-refused-{tag}"))
        # typing after the refusal previews the new value live again
        percent.fill("40")
        expect(preview).to_contain_text("of user ids 1–10,000 fall in")
        # back and forward: a fresh page with the saved values and their preview
        page.goto(live_server + "/")
        page.go_back()
        expect(
            page.locator("#segment-settings").get_by_label("Automatic rollout, % of all users")
        ).to_have_value("20")
        assert fall_in(page.locator("#rollout-preview").inner_text()) == grouped_20
        page.go_forward()
        expect(page.locator("h1")).to_contain_text("Segments")
        page.go_back()
        expect(page.locator("#segment-settings").get_by_label("Exclusion group")).to_have_value("DISCOUNTS")


def test_a_message_goes_when_the_user_types_in_another_form(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_VOICE_MESSAGES"})
    for first, viewport in ((10, DESKTOP), (20, MOBILE)):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/AVITO_VOICE_MESSAGES")
        paste = page.locator("#bulk-add textarea[name=user_ids]")
        paste.fill(f"{first + 1} {first + 2}")
        page.locator("#bulk-add").get_by_role("button", name=re.compile("^Add")).first.click()
        flash = page.locator("#flash")
        expect(flash).to_contain_text("added")
        page.wait_for_timeout(800)  # the page's refreshes after the add leave it
        expect(flash).to_contain_text("added")
        page.locator("#segment-settings textarea[name=description]").press_sequentially("Voice")
        expect(page.locator("#flash .alert")).to_have_count(0)
        # and in the paste box it came from
        paste.fill(str(first + 3))
        page.locator("#bulk-add").get_by_role("button", name=re.compile("^Add")).first.click()
        expect(flash).to_contain_text("1 added")
        expect(flash).to_contain_text("(1 id received)")
        paste.press_sequentially("1")
        expect(page.locator("#flash .alert")).to_have_count(0)


def test_the_list_fits_with_a_scheduled_step(page, live_server, live_api, shots):
    for slug, description in (
        ("AVITO_DISCOUNT_30", "new 30"),
        ("AVITO_PERFORMANCE_VAS", "Performance VAS"),
        ("AVITO_VOICE_MESSAGES", "Voice messages in chat"),
    ):
        live_api("POST", "/api/v1/segments", {"slug": slug, "description": description})
    live_api(
        "POST",
        "/api/v1/segments",
        {
            "slug": "AVITO_DISCOUNT_50",
            "description": "50% discount",
            "rollout_percent": 20,
            "exclusion_group": "DISCOUNTS",
        },
    )
    at = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    live_api(
        "POST", "/api/v1/segments/AVITO_DISCOUNT_50/schedule", {"at": at.isoformat(), "rollout_percent": 10}
    )
    for viewport, tag in ((DESKTOP, "1366"), (MOBILE, "390")):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/")
        expect(page.locator("[data-next-step]")).to_contain_text("→ 10% on")
        assert_fits(page, f"list at {tag}")
        assert page.evaluate(TABLE_OVERFLOW) <= 0, f"the list is cut off at {tag}"
        if viewport is DESKTOP:
            created = page.locator("#segment-table thead th").last.bounding_box()
            frame = page.locator("#segment-table .table-wrap").bounding_box()
            assert created["x"] + created["width"] <= frame["x"] + frame["width"] + 1
        shots(page, f"list-next-step-{tag}")
        page.reload()  # a second load looks the same
        assert page.evaluate(TABLE_OVERFLOW) <= 0
