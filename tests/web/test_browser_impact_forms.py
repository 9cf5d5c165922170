"""Issue 24, item 1, in Chromium at 1366 and 390 px: deleting a segment, scheduling a step and
replacing the members each say how many known users leave and join before anything is saved,
ask to confirm, show new numbers when the segments changed meanwhile (a second click), survive
back/forward, and for a deletion and a replace the history then holds exactly the numbers shown."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits
from tests.support.moves import history_counts, shown_moves
from webapp.models.enums import Action

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def in_history(counts: Counter, slug: str) -> tuple[int, int]:
    return counts[(slug, Action.REMOVED)], counts[(slug, Action.ADDED)]


def a_group(live_api, left: str, right: str, group: str) -> None:
    """``left``: explicit members 1-300; ``right``: a 50% rollout of the same group (so users
    leaving ``left`` can join ``right``)."""
    live_api("POST", "/api/v1/segments", {"slug": left, "exclusion_group": group})
    live_api("POST", f"/api/v1/segments/{left}/members", {"user_ids": list(range(1, 301))})
    live_api("POST", "/api/v1/segments", {"slug": right, "rollout_percent": 50, "exclusion_group": group})


def test_delete_says_who_leaves_and_joins_and_history_agrees(page, live_server, live_api, shots, redis_app):
    a_group(live_api, "GONE_SOON", "STAYS_ON", "DELETING")
    # 390 px: the numbers fit, Cancel goes back, back/forward change nothing
    page.set_viewport_size(MOBILE)
    page.goto(live_server + "/segments/GONE_SOON")
    page.get_by_role("link", name="Delete segment…").click()
    impact = page.locator("#delete-impact")
    expect(impact).to_contain_text("Deleting now: 300 will leave, 0 will join GONE_SOON")
    expect(impact).to_contain_text("join STAYS_ON (of 300 known users, as of now)")
    assert_fits(page, "delete confirmation at 390")
    shots(page, "impact-delete-390")
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("h1.slug-title")).to_have_text("GONE_SOON")
    page.go_back()
    expect(page.locator("#delete-impact")).to_contain_text("300 will leave")
    page.go_forward()
    expect(page.locator("h1.slug-title")).to_have_text("GONE_SOON")
    # 1366 px: the segments change while the page is open: the first click shows new numbers
    page.set_viewport_size(DESKTOP)
    page.goto(live_server + "/segments/GONE_SOON/delete")
    first = shown_moves(page.locator("#delete-impact").inner_text(), "STAYS_ON")
    assert first[1] > 0
    shots(page, "impact-delete")
    live_api("PATCH", "/api/v1/segments/STAYS_ON", {"rollout_percent": 30})
    page.get_by_label("Type").fill("GONE_SOON")
    page.get_by_role("button", name=re.compile("^Delete segment")).click()
    impact = page.locator("#delete-impact")
    expect(impact).to_contain_text("The segments changed since the last numbers. Deleting now:")
    expect(page.get_by_label("Type")).to_have_value("GONE_SOON")
    text = impact.inner_text()
    own, other = shown_moves(text, "GONE_SOON"), shown_moves(text, "STAYS_ON")
    assert own == (300, 0) and other != first and other[1] > 0
    assert live_api("GET", "/api/v1/segments/GONE_SOON")["slug"] == "GONE_SOON"  # not deleted yet
    since = datetime.now(UTC)
    page.get_by_role("button", name=re.compile("^Delete segment")).click()  # the second click deletes
    expect(page.locator("#flash")).to_contain_text(
        f"Segment GONE_SOON deleted; 300 members left it; {other[1]:,} joined STAYS_ON."
    )
    counts = history_counts(redis_app, range(1, 301), since)
    assert in_history(counts, "GONE_SOON") == own
    assert in_history(counts, "STAYS_ON") == other
    expect(page.locator("#segment-table")).not_to_contain_text("GONE_SOON")


def test_a_scheduled_step_is_counted_as_if_it_applied_now(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "PLANNED_DOWN", "rollout_percent": 50})
    live_api("POST", "/api/v1/segments", {"slug": "PLANNED_KNOWN"})
    live_api("POST", "/api/v1/segments/PLANNED_KNOWN/members", {"user_ids": list(range(1, 1001))})
    for n, viewport in enumerate((MOBILE, DESKTOP)):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/PLANNED_DOWN")
        schedule = page.locator("#schedule")
        when = (datetime.now(UTC) + timedelta(days=2 + n)).replace(hour=10, minute=0)
        schedule.get_by_label("When (UTC)").fill(when.strftime("%Y-%m-%dT%H:%M"))
        schedule.get_by_label("Rollout, %").fill("10")
        live = page.locator("#schedule-impact")
        expect(live).to_contain_text("If it applied now:")
        expect(live).to_contain_text("(of 1,000 known users, counted today)")
        shown = shown_moves(live.inner_text(), "PLANNED_DOWN", "would")
        assert shown[0] > 0 and shown[1] == 0
        schedule.get_by_role("button", name="Schedule change").click()
        confirm = page.locator("#schedule-confirm")
        expect(confirm).to_contain_text("If it applied now:")
        assert shown_moves(confirm.inner_text(), "PLANNED_DOWN", "would") == shown
        expect(page.locator("#schedule .timeline li")).to_have_count(0)  # nothing added yet
        assert_fits(page, f"schedule confirmation at {viewport['width']}")
        confirm.scroll_into_view_if_needed()
        shots(page, "impact-schedule" if viewport is DESKTOP else "impact-schedule-390")
        if viewport is MOBILE:
            confirm.get_by_role("link", name="Cancel").click()
            expect(page.locator("#schedule-confirm")).to_have_count(0)
            page.go_back()
            page.go_forward()
            expect(page.locator("#schedule .timeline li")).to_have_count(0)
            assert live_api("GET", "/api/v1/segments/PLANNED_DOWN/schedule")["items"] == []
            continue
        # the segments change before the click: new numbers, confirmed by a second click
        live_api("POST", "/api/v1/segments", {"slug": "PLANNED_ELSE"})
        confirm.get_by_role("button", name=re.compile("^Confirm")).click()
        expect(page.locator("#schedule-confirm")).to_contain_text(
            "The segments changed since the last numbers."
        )
        page.locator("#schedule-confirm").get_by_role("button", name=re.compile("^Confirm")).click()
        expect(page.locator("#flash")).to_contain_text("PLANNED_DOWN will change to 10%")
        expect(page.locator("#schedule .timeline li.pending")).to_have_count(1)
        # a raise takes nobody out: added at once
        schedule = page.locator("#schedule")
        schedule.get_by_label("When (UTC)").fill((when + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
        schedule.get_by_label("Rollout, %").fill("70")
        expect(page.locator("#schedule-impact")).to_contain_text("If it applied now:")
        schedule.get_by_role("button", name="Schedule change").click()
        expect(page.locator("#schedule .timeline li.pending")).to_have_count(2)
        page.go_back()
        page.go_forward()
        expect(page.locator("#schedule .timeline li.pending")).to_have_count(2)


def test_a_replace_says_who_leaves_and_joins_and_history_agrees(
    page, live_server, live_api, shots, redis_app
):
    a_group(live_api, "REPLACED", "NEIGHBOUR", "REPLACING")
    outside = [
        u
        for u in range(301, 401)
        if not live_api("GET", f"/api/v1/users/{u}/segments")["segments"]  # not in NEIGHBOUR's rollout
    ]
    listed = ", ".join(map(str, [*range(201, 301), *outside]))
    for viewport in (MOBILE, DESKTOP):
        page.set_viewport_size(viewport)
        page.goto(live_server + "/segments/REPLACED")
        card = page.locator("#bulk-change")
        card.get_by_label("Replace members with this file").check()
        card.get_by_label("User ids").fill(listed)
        card.get_by_role("button", name="Preview: who leaves, who joins").click()
        confirm = page.locator("#bulk-confirm")
        expect(confirm).to_contain_text(
            f"Replace members with this list: 200 will leave, {len(outside)} will join"
        )
        assert_fits(page, f"replace confirmation at {viewport['width']}")
        confirm.scroll_into_view_if_needed()
        shots(page, "impact-replace" if viewport is DESKTOP else "impact-replace-390")
        if viewport is MOBILE:
            confirm.get_by_role("link", name="Cancel").click()
            expect(page.locator("#bulk-confirm")).to_have_count(0)
            page.go_back()
            page.go_forward()
            expect(page.locator("#bulk-change")).to_be_visible()
            assert len(live_api("GET", "/api/v1/segments/REPLACED/members?limit=1000")["items"]) == 300
            continue
        first = confirm.inner_text()
        # NEIGHBOUR's rollout shrinks meanwhile: the first click shows the new numbers
        live_api("PATCH", "/api/v1/segments/NEIGHBOUR", {"rollout_percent": 40})
        confirm.get_by_role("button", name=re.compile("^Confirm")).click()
        confirm = page.locator("#bulk-confirm")
        expect(confirm).to_contain_text("The segments changed since the last numbers.")
        text = confirm.inner_text()
        own, other = shown_moves(text, "REPLACED"), shown_moves(text, "NEIGHBOUR")
        assert own == (200, len(outside)) and other[1] > 0 and other != shown_moves(first, "NEIGHBOUR")
        since = datetime.now(UTC)
        confirm.get_by_role("button", name=re.compile("^Confirm")).click()
        expect(page.locator("#flash")).to_contain_text(f"REPLACED replaced: {len(outside)} joined, 200 left")
        counts = history_counts(redis_app, range(1, 401), since)
        assert in_history(counts, "REPLACED") == own
        assert in_history(counts, "NEIGHBOUR") == other
        page.go_back()
        page.go_forward()
        expect(page.locator("#bulk-confirm")).to_have_count(0)
