"""Issue 24, item 7 in a real browser (Debian chromium), at 1366 and 390 px, with a second
click and back/forward and no console error (tests/browser/conftest.py): a deleted segment's
page, its Restore (and a refused one naming the newer segment), and history entries that link to
the change that caused them."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def test_a_deleted_segment_shows_when_and_who_and_comes_back(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_VOICE_OLD", "rollout_percent": 10})
    live_api("POST", "/api/v1/segments/AVITO_VOICE_OLD/members", {"user_ids": [101, 102, 103]})
    page.goto(live_server + "/segments/AVITO_VOICE_OLD/delete")
    page.get_by_label("Type AVITO_VOICE_OLD to confirm").fill("AVITO_VOICE_OLD")
    page.get_by_role("button", name="Delete segment").click()
    expect(page.locator("#flash")).to_contain_text("Segment AVITO_VOICE_OLD deleted")
    page.goto(live_server + "/segments/AVITO_VOICE_OLD")
    expect(page.locator("h1")).to_contain_text("AVITO_VOICE_OLD")
    expect(page.locator("#deleted-when")).to_contain_text("by")
    expect(page.locator('[data-stat="kept"]')).to_have_text("3")
    expect(page.locator('[data-stat="rollout"]')).to_have_text("10%")
    expect(page.locator("#deleted-activity tbody tr").first).to_contain_text(
        "Deleted with 3 explicit members"
    )
    for size, name in ((DESKTOP, "segment-deleted"), (MOBILE, "segment-deleted-mobile")):
        page.set_viewport_size(size)
        assert_fits(page, f"deleted page at {size['width']} px")
        shots(page, name)
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Restore AVITO_VOICE_OLD").click()
    expect(page.locator("#flash")).to_contain_text(
        "Segment AVITO_VOICE_OLD restored: 3 members are back, with its 10% rollout."
    )
    expect(page.locator('#segment-summary [data-stat="members"]')).to_have_text("3")
    expect(page.locator("#segment-activity tbody tr").first).to_contain_text(
        "Restored with 3 explicit members"
    )
    shots(page, "segment-restored")
    # back: the same URL is the live segment now (pages are never cached), so there is no
    # Restore button to click twice (a repeated POST is tests/web/test_restore_web.py's)
    page.go_back()
    expect(page.locator("h1")).to_contain_text("AVITO_VOICE_OLD")
    expect(page.get_by_role("button", name="Restore AVITO_VOICE_OLD")).to_have_count(0)
    expect(page.locator('#segment-summary [data-stat="members"]')).to_have_text("3")
    page.go_forward()
    expect(page.locator("h1")).to_contain_text("AVITO_VOICE_OLD")
    page.set_viewport_size(MOBILE)
    assert_fits(page, "restored segment at 390 px")
    assert live_api("GET", "/api/v1/segments/AVITO_VOICE_OLD")["member_count"] == 3


def test_a_taken_slug_names_the_newer_segment_with_a_link(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_TAKEN"})
    live_api("DELETE", "/api/v1/segments/AVITO_TAKEN")
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_TAKEN", "description": "the newer one"})
    page.goto(live_server + "/segments/AVITO_TAKEN/deleted")
    notice = page.locator("#restore .field-error")
    expect(notice).to_contain_text("A newer segment called AVITO_TAKEN was created")
    expect(page.get_by_role("button", name="Restore AVITO_TAKEN")).to_have_count(0)
    for size, name in ((DESKTOP, "segment-deleted-taken"), (MOBILE, "segment-deleted-taken-mobile")):
        page.set_viewport_size(size)
        assert_fits(page, f"taken slug at {size['width']} px")
        shots(page, name)
    notice.get_by_role("link", name="AVITO_TAKEN").click()
    expect(page.locator(".page-head")).to_contain_text("AVITO_TAKEN")
    expect(page.get_by_role("link", name="Delete segment…")).to_be_visible()  # the live one
    page.go_back()
    expect(notice).to_contain_text("A newer segment called AVITO_TAKEN")


def test_history_entries_say_which_change_caused_them(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_CAUSE"})
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_EXPLICIT"})
    live_api("PATCH", "/api/v1/segments/AVITO_CAUSE", {"rollout_percent": 100})
    live_api("POST", "/api/v1/users/77/segments", {"add": ["AVITO_EXPLICIT"]})
    live_api("PATCH", "/api/v1/segments/AVITO_CAUSE", {"rollout_percent": 0})
    for size, name in ((DESKTOP, "user-history-causes"), (MOBILE, "user-history-causes-mobile")):
        page.set_viewport_size(size)
        page.goto(live_server + "/users/77")
        history = page.locator("#user-history")
        causes = history.locator("a.cause")
        expect(causes).to_have_count(2)
        expect(causes.first).to_have_text("rollout 100% → 0%")  # newest first
        expect(history).to_contain_text("rollout 0% → 100% by api at")
        expect(history.locator("li", has_text="AVITO_EXPLICIT")).to_contain_text("api")
        assert_fits(page, f"user history at {size['width']} px")
        shots(page, name)
    page.set_viewport_size(DESKTOP)
    page.locator("#user-history a.cause").first.click()
    expect(page).to_have_url(live_server + "/segments/AVITO_CAUSE#segment-activity")
    expect(page.locator("#segment-activity")).to_contain_text("Rollout changed from 100% to 0%")
    page.go_back()
    expect(page.locator("#user-history a.cause")).to_have_count(2)
    page.locator("#user-history a.cause").nth(1).click()  # a second link, the older change
    expect(page.locator("#segment-activity")).to_contain_text("Rollout changed from 0% to 100%")
