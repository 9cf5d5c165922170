"""Issue 24 in Chromium (items 5 and 7): scheduled rollout changes shown and entered in the
browser's time zone (here Europe/Berlin: CET in December, UTC+1), the next step on the segments
list and under the Rollout card; UTC, named, without JavaScript; the API docs page's header and
its way back; the demo data's message. 1366 and 390 px, a second click, back and forward, no
console error (tests/support/browser.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
BERLIN = ZoneInfo("Europe/Berlin")
# Swagger UI fetches and renders the whole spec; on a loaded 2-core CI that took over 5 s once.
SWAGGER = 20_000


@pytest.fixture
def browser_context_args(browser_context_args):
    """The browser in Berlin: its times differ from UTC, so a time shown in UTC would show."""
    return {**browser_context_args, "timezone_id": "Europe/Berlin"}


def local_day(days: int, hour: int) -> datetime:
    """A wall-clock time in Berlin ``days`` ahead."""
    day = (datetime.now(BERLIN) + timedelta(days=days)).date()
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=BERLIN)


def words(at: datetime, weekday: bool = False) -> str:
    """As the page writes a time: 'Thu 10 Dec 2026, 10:00 CET'."""
    return f"{at:%a} " * weekday + f"{at.day} {at:%b %Y, %H:%M} {at.tzname()}"


def test_schedule_in_the_browsers_zone_shown_on_the_card_and_the_list(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_PLANNED", "rollout_percent": 10})
    first, second = local_day(3, 10), local_day(5, 18)
    page.goto(live_server + "/segments/AVITO_PLANNED")
    schedule = page.locator("#schedule")
    zone = first.tzname()
    expect(schedule.locator("[data-zone-name]")).to_have_text(zone)  # "When (CET)"
    echo = schedule.locator("#schedule-at-echo")
    expect(echo).to_have_text(f"In your time zone, Europe/Berlin ({zone}).")
    field = schedule.get_by_label(f"When ({zone})")
    field.fill(first.strftime("%Y-%m-%dT%H:%M"))
    utc = first.astimezone(UTC)
    expect(schedule.locator("#schedule-at-echo")).to_have_text(f"{words(first, True)} ({utc:%H:%M} UTC)")
    schedule.get_by_label("Rollout, %").fill("5")
    schedule.get_by_role("button", name="Schedule change").click()
    expect(page.locator("#flash")).to_contain_text(
        f"AVITO_PLANNED will change to 5% on {words(first)} ({utc:%H:%M} UTC)."
    )
    stored = live_api("GET", "/api/v1/segments/AVITO_PLANNED/schedule")["items"]
    assert [datetime.fromisoformat(s["at"]) for s in stored] == [utc]  # stored in UTC
    card = page.locator("#segment-summary [data-next-step]")
    expect(card).to_have_text(f"→ 5% on {words(first)}")
    expect(schedule.locator(".timeline time").first).to_have_text(words(first, True))
    activity = page.locator("#segment-activity")  # the activity log says it in the same zone
    expect(activity).to_contain_text(f"Scheduled 5% for {words(first)}")

    # A second change, later: the card still shows the next one; the timeline both.
    schedule.get_by_label(f"When ({zone})").fill(second.strftime("%Y-%m-%dT%H:%M"))
    schedule.get_by_label("Rollout, %").fill("20")
    schedule.get_by_role("button", name="Schedule change").click()
    expect(schedule.locator(".timeline li")).to_have_count(2)
    expect(schedule.locator(".timeline time").nth(1)).to_have_text(words(second, True))
    expect(card).to_have_text(f"→ 5% on {words(first)}")
    assert_fits(page, "segment page, 1366 px")
    shots(page, "schedule-local-time")

    # The list: the next step beside the current rollout.
    page.locator("header.top nav").get_by_role("link", name="Segments").click()
    row = page.locator("tr", has=page.locator("a", has_text="AVITO_PLANNED"))
    expect(row.locator("[data-next-step]")).to_have_text(f"→ 5% on {words(first)}")
    expect(row.locator(".badge.rollout")).to_have_text("10%")
    assert_fits(page, "segments list, 1366 px")
    shots(page, "segments-next-step")

    # Back and forward: the pages come again, their times again in the browser's zone.
    page.go_back()
    expect(page.locator("#segment-summary [data-next-step]")).to_have_text(f"→ 5% on {words(first)}")
    page.go_forward()
    expect(row.locator("[data-next-step]")).to_have_text(f"→ 5% on {words(first)}")

    # 390 px: the list's stacked rows and the segment page keep the step and fit.
    page.set_viewport_size(MOBILE)
    expect(row.locator("[data-next-step]")).to_be_visible()
    assert_fits(page, "segments list, 390 px")
    shots(page, "segments-next-step-mobile")
    row.locator("a", has_text="AVITO_PLANNED").click()
    expect(page.locator("#segment-summary [data-next-step]")).to_have_text(f"→ 5% on {words(first)}")
    assert_fits(page, "segment page, 390 px")
    shots(page, "schedule-local-time-mobile")

    # Cancel the first (the question names the local time): the card moves on to the next step.
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.locator("#schedule .timeline li").first.get_by_role("button", name="Cancel").click()
    expect(page.locator("#flash")).to_contain_text(
        f"The change to 5% on {words(first)} ({utc:%H:%M} UTC) is cancelled."
    )
    assert asked == [f"Cancel the change of AVITO_PLANNED to 5% on {words(first)}?"]
    expect(page.locator("#segment-summary [data-next-step]")).to_have_text(f"→ 20% on {words(second)}")
    page.set_viewport_size(DESKTOP)


def test_without_javascript_times_are_utc_and_say_so(browser, live_server, live_api):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_NOJS"})
    at = local_day(4, 9).astimezone(UTC)
    live_api("POST", "/api/v1/segments/AVITO_NOJS/schedule", {"at": at.isoformat(), "rollout_percent": 5})
    context = browser.new_context(java_script_enabled=False, timezone_id="Europe/Berlin", viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(live_server + "/")
        row = page.locator("tr", has=page.locator("a", has_text="AVITO_NOJS"))
        expect(row.locator("[data-next-step]")).to_have_text(f"→ 5% on {words(at)}")  # "... 08:00 UTC"
        page.goto(live_server + "/segments/AVITO_NOJS")
        expect(page.locator("#schedule [data-zone-name]")).to_have_text("UTC")
        # Typed without JavaScript, a time is UTC, as the form says.
        later = local_day(6, 7).astimezone(UTC)
        schedule = page.locator("#schedule")
        schedule.get_by_label("When (UTC)").fill(later.strftime("%Y-%m-%dT%H:%M"))
        schedule.get_by_label("Rollout, %").fill("15")
        schedule.get_by_role("button", name="Schedule change").click()
        expect(page.locator("#flash")).to_contain_text(f"will change to 15% on {words(later)}.")
        times = [s["at"] for s in live_api("GET", "/api/v1/segments/AVITO_NOJS/schedule")["items"]]
        assert datetime.fromisoformat(times[-1]) == later
    finally:
        context.close()


def test_api_docs_page_has_the_dashboards_header_and_a_way_back(page, live_server, shots):
    for size, name in ((DESKTOP, "api-docs-header"), (MOBILE, "api-docs-header-mobile")):
        page.set_viewport_size(size)
        page.goto(live_server + "/api/docs")
        header = page.locator("header.top")
        expect(header.get_by_role("link", name="API")).to_have_attribute("aria-current", "page")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Segments", timeout=SWAGGER)
        assert (
            page.evaluate("() => document.querySelector('header.top').getBoundingClientRect().right")
            <= size["width"]
        )
        page.screenshot(path=str(shots(page, name)))  # (the window only: the spec is pages long)
        header.get_by_role("link", name="← Back to the dashboard").click()
        expect(page).to_have_url(live_server + "/")
        page.go_back()
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Segments", timeout=SWAGGER)
        page.go_forward()
        expect(page).to_have_url(live_server + "/")
        page.locator("header.top nav").get_by_role(
            "link", name="API"
        ).click()  # and in again, from the dashboard
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Segments", timeout=SWAGGER)
    page.set_viewport_size(DESKTOP)


def test_demo_data_message_is_true_for_each_segment(page, live_server, live_api):
    page.goto(live_server + "/")
    card = page.locator("#first-run")
    expect(card).to_contain_text("one with no members of its own that reaches 10% of all users")
    expect(card).not_to_contain_text("seed-demo")
    card.get_by_role("button", name="Load demo data").click()
    flash = page.locator("#flash")
    expect(flash).to_contain_text(
        "Demo data loaded: 4 segments. AVITO_VOICE_MESSAGES, AVITO_PERFORMANCE_VAS and AVITO_DISCOUNT_30 "
        "have 200 members each; AVITO_DISCOUNT_50 has no members of its own: it reaches 10% of all "
        "users through its automatic rollout."
    )
    counts = {s["slug"]: s["member_count"] for s in live_api("GET", "/api/v1/segments")["items"]}
    assert counts == {
        "AVITO_VOICE_MESSAGES": 200,
        "AVITO_PERFORMANCE_VAS": 200,
        "AVITO_DISCOUNT_30": 200,
        "AVITO_DISCOUNT_50": 0,
    }
    page.go_back()  # the empty dashboard is gone: the list, loaded again
    expect(page.locator("#first-run")).to_have_count(0)
    page.set_viewport_size(MOBILE)
    page.reload()
    assert_fits(page, "segments list with the demo data, 390 px")
    page.set_viewport_size(DESKTOP)
