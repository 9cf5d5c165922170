"""Issue 12 in a real browser (Debian chromium): each flow done twice, with back/forward, at
1366 px and 390 px, with no console error on any page (tests/support/browser.py)."""

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def previous_month() -> tuple[str, str]:
    now = datetime.now(UTC)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    first = datetime(year, month, 1)
    return first.strftime("%Y-%m"), first.strftime("%B %Y")


def stat(page, name):
    return page.locator(f'#segment-summary [data-stat="{name}"]')


# 1 -------------------------------------------------------------------------------------------------------


def test_bulk_paste_with_bad_tokens_then_file_and_paste_together(
    page, live_server, live_api, shots, tmp_path, console_errors
):
    console_errors.allow(422)
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_BULK_PASTE"})
    page.goto(live_server + "/segments/AVITO_BULK_PASTE")
    form = page.locator("#bulk-add")
    expect(form).to_contain_text("If any entry is not a user id, nothing is added")
    form.get_by_label("Paste user ids").fill("-301, 302, 303\n304\n305 abc")
    form.get_by_role("button", name="Add to AVITO_BULK_PASTE").click()
    problems = page.locator("#user_ids-error")
    expect(problems).to_contain_text("Nothing was added: 2 entries are not user ids.")
    expect(problems.locator("li")).to_have_text(
        ["Line 1: “-301” is negative: user ids start at 1.", "Line 3: “abc” is not a number."]
    )
    expect(page.get_by_label("Paste user ids")).to_be_focused()
    expect(stat(page, "members")).to_have_text("0")
    shots(page, "bulk-errors")
    # Fixed, and a second add in a row: every valid id is added, the page's parts follow.
    page.get_by_label("Paste user ids").fill("302, 303\n304\n305")
    page.get_by_role("button", name="Add to AVITO_BULK_PASTE").click()
    expect(page.locator("#flash")).to_contain_text(
        "4 added, 0 expiry updated, 0 already members (4 ids received)."
    )
    expect(stat(page, "members")).to_have_text("4")
    expect(page.locator("#recent-changes tbody tr")).to_have_count(4)
    # A multi-column file with a header, plus pasted ids: both are used, the header is said.
    people = tmp_path / "people.csv"
    people.write_text("user_id,email,country\n400,a@example.com,RU\n401,b@example.com,KZ\n")
    page.locator("#bulk-add input[type=file]").set_input_files(str(people))
    page.get_by_label("Paste user ids").fill("302 500")
    page.get_by_role("button", name="Add to AVITO_BULK_PASTE").click()
    flash = page.locator("#flash")
    expect(flash).to_contain_text(
        "3 added, 0 expiry updated, 1 already a member (4 ids received: 2 pasted and 2 from people.csv)."
    )
    expect(flash).to_contain_text(
        "people.csv: the first line was read as column names; the ids come from its user_id column."
    )
    expect(stat(page, "members")).to_have_text("7")
    assert live_api("GET", "/api/v1/segments/AVITO_BULK_PASTE")["member_count"] == 7


# 2 -------------------------------------------------------------------------------------------------------


def test_two_reports_in_a_row_on_the_user_page(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_REPORTED"})
    live_api("POST", "/api/v1/users/2002/segments", {"add": ["AVITO_REPORTED"]})
    page.goto(live_server + "/users/2002")
    card = page.locator("#user-reports-card")
    card.get_by_role("button", name="Build CSV report").click()
    this_month = datetime.now(UTC).strftime("%B %Y")
    first = card.locator("li", has_text=this_month)
    expect(first.get_by_role("link", name="Download CSV")).to_be_visible(timeout=15_000)
    # The second one, for last month, after the first has finished: the form is still there.
    period, label = previous_month()
    card.get_by_label("Month").fill(period)
    card.get_by_role("button", name="Build CSV report").click()
    second = page.locator("#user-reports li").first
    expect(second.locator(".report-month")).to_have_text(label)
    expect(second.get_by_role("link", name="Download CSV")).to_be_visible(timeout=15_000)
    expect(page.locator("#user-reports li")).to_have_count(2)
    expect(page.locator("#user-reports .report-month")).to_have_text([label, this_month])
    with page.expect_download() as info:
        second.get_by_role("link", name="Download CSV").click()
    assert info.value.suggested_filename.startswith(f"history-user-2002-{period}_")  # unique (issue 24)
    # And a third, the same month again: still no error, the list grows, newest first.
    card.get_by_label("Month").fill(period)
    card.get_by_role("button", name="Build CSV report").click()
    expect(page.locator("#user-reports li")).to_have_count(3)
    expect(page.locator("#user-reports li").first.get_by_role("link", name="Download CSV")).to_be_visible(
        timeout=15_000
    )
    page.locator("#flash").get_by_role("button", name="Dismiss").click()  # the message floats over the page
    expect(page.locator("#flash .alert")).to_have_count(0)
    shots(page, "user-reports")


# 3 -------------------------------------------------------------------------------------------------------


def test_back_and_forward_never_show_a_stale_page(page, live_server, live_api):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_STALE"})
    live_api("POST", "/api/v1/users/3003/segments", {"add": ["AVITO_STALE"]})
    page.goto(live_server + "/users/3003")
    expect(page.locator("#user-segments")).to_contain_text("AVITO_STALE")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#user-segments tr", has_text="AVITO_STALE").get_by_role("button", name="Remove").click()
    expect(page.locator("#user-segments")).not_to_contain_text("AVITO_STALE")
    page.get_by_role("link", name="Segments", exact=True).click()
    expect(page).to_have_url(live_server + "/")
    page.go_back()
    expect(page).to_have_url(live_server + "/users/3003")
    expect(page.locator("#user-segments")).to_contain_text("is in no segment")  # the removed one stays gone
    page.go_forward()
    # A segment created here, then a page away and back: the list has it.
    page.locator("#create-segment").get_by_label("Slug").fill("AVITO_CREATED_HERE")
    page.locator("#create-segment").get_by_role("button", name="Create segment").click()
    expect(page.locator("#segment-table")).to_contain_text("AVITO_CREATED_HERE")
    page.get_by_role("link", name="AVITO_STALE").click()
    expect(page.locator("h1")).to_have_text("AVITO_STALE")
    page.go_back()
    expect(page.locator("#segment-table")).to_contain_text("AVITO_CREATED_HERE")
    # A search (pushed into history by htmx) and back: the page is loaded again, not restored.
    page.get_by_placeholder("Search slug or description…").fill("created")
    expect(page.locator("#segment-table tbody tr")).to_have_count(1)
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_CREATED_LATER"})
    page.get_by_role("link", name="AVITO_CREATED_HERE").click()
    page.go_back()
    expect(page).to_have_url(re.compile(r"q=created"))
    expect(page.locator("#segment-table tbody tr")).to_have_count(2)  # the one created meanwhile is there


# 4 -------------------------------------------------------------------------------------------------------


def test_segment_page_agrees_with_itself_after_each_change(page, live_server, live_api):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_AGREES"})
    live_api("POST", "/api/v1/segments/AVITO_AGREES/members", {"user_ids": [11, 12, 13]})
    page.goto(live_server + "/segments/AVITO_AGREES")
    expect(stat(page, "members")).to_have_text("3")
    # Rollout saved: the stat card changes without a reload, twice in a row.
    for percent in ("12.5", "20"):
        page.locator("#segment-settings").get_by_label("Automatic rollout, % of all users").fill(percent)
        page.locator("#segment-settings").get_by_role("button", name="Save").click()
        expect(stat(page, "rollout")).to_have_text(f"{percent}%")
    # A member removed: count, chart and recent changes follow.
    for user in ("11", "12"):
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#members tr", has_text=user).get_by_role("button", name="Remove").click()
        expect(page.locator("#flash")).to_contain_text(f"User {user} removed from AVITO_AGREES.")
    expect(stat(page, "members")).to_have_text("1")
    expect(page.locator("#recent-changes tbody tr").first).to_contain_text("removed")
    # Bulk add: the same. Two users not in already through the 20% rollout: adding one who is
    # moves nobody, so history (and Recent changes) rightly show nothing for them.
    fresh = [
        u
        for u in range(21, 80)
        if not any(
            s["slug"] == "AVITO_AGREES" for s in live_api("GET", f"/api/v1/users/{u}/segments")["segments"]
        )
    ][:2]
    page.get_by_label("Paste user ids").fill(" ".join(map(str, fresh)))
    page.get_by_role("button", name="Add to AVITO_AGREES").click()
    expect(stat(page, "members")).to_have_text("3")
    expect(page.locator("#recent-changes tbody tr").first).to_contain_text("added")


# 7 -------------------------------------------------------------------------------------------------------


def test_plain_words_once_next_to_the_field_and_upper_case_offers(
    page, live_server, live_api, console_errors, shots
):
    console_errors.allow(422)
    page.goto(live_server + "/")
    form = page.locator("#create-segment")
    form.get_by_label("Slug").fill("avito_lower")
    form.get_by_role("button", name="Create segment").click()
    error = page.locator("#slug-error")
    expect(error).to_contain_text("Slugs are written in upper case.")
    expect(page.locator(".field-error, .alert-error")).to_have_count(1)  # shown once
    page.get_by_role("button", name="Use AVITO_LOWER").click()
    expect(page.locator("#segment-table")).to_contain_text("AVITO_LOWER")
    # The same offer on the user page.
    page.goto(live_server + "/users/7007")
    page.locator("#add-segment").get_by_label("Segment").fill("avito_lower")
    page.locator("#add-segment").get_by_role("button", name="Add").click()
    page.get_by_role("button", name="Use AVITO_LOWER").click()
    expect(page.locator("#user-segments")).to_contain_text("AVITO_LOWER")
    # A percentage the browser lets through but the service refuses: plain words, no notation.
    page.goto(live_server + "/segments/AVITO_LOWER")
    page.locator("#segment-settings").get_by_label("Automatic rollout, % of all users").fill("1.234")
    page.evaluate("document.querySelector('#segment-settings').noValidate = true")
    page.locator("#segment-settings").get_by_role("button", name="Save").click()
    expect(page.locator("#rollout_percent-error")).to_have_text(
        "Use at most two decimal places, like 12.5 or 0.25."
    )
    for text in page.locator(".field-error, .alert").all_inner_texts():
        assert not re.search(r"\^|\.\.|2\^63|rollout_percent|user_id|YYYY", text), text
    # The header's lookup: spaces trimmed; a bad id explained on a normal page.
    page.locator("#lookup-id").fill("  7007 ")
    page.locator("header .lookup").get_by_role("button", name="Find user").click()
    expect(page).to_have_url(live_server + "/users/7007")
    page.locator("#lookup-id").fill("-5")
    page.locator("header .lookup").get_by_role("button", name="Find user").click()
    expect(page.locator("h1")).to_have_text("Find a user")
    expect(page.locator("#lookup-problem")).to_have_text(
        "“-5” is negative: user ids start at 1. User ids are whole numbers from 1 up, like 1001."
    )
    shots(page, "user-lookup")
    page.locator("#lookup-id").fill("99999999999999999999")
    page.locator("header .lookup").get_by_role("button", name="Find user").click()
    expect(page.locator("#lookup-problem")).to_contain_text("is too large to be a user id")


# 8 -------------------------------------------------------------------------------------------------------


def test_every_page_at_390_px_has_no_clipped_control_and_no_sideways_scroll(
    page, live_server, live_api, shots
):
    live_api(
        "POST",
        "/api/v1/segments",
        {"slug": "AVITO_PERFORMANCE_VAS_EXTENDED_NAME", "description": "A long one", "rollout_percent": 10},
    )
    live_api(
        "POST",
        "/api/v1/segments/AVITO_PERFORMANCE_VAS_EXTENDED_NAME/members",
        {"user_ids": list(range(100, 160))},
    )
    live_api(
        "POST",
        "/api/v1/users/100/segments",
        {"add": [{"slug": "AVITO_PERFORMANCE_VAS_EXTENDED_NAME", "ttl_seconds": 86400}]},
    )
    live_api("POST", "/api/v1/reports", {"user_id": 100, "period": datetime.now(UTC).strftime("%Y-%m")})
    page.set_viewport_size(MOBILE)
    for path, name in [
        ("/", "segments-mobile-list"),
        ("/segments/AVITO_PERFORMANCE_VAS_EXTENDED_NAME", "segment-mobile"),
        ("/users/100", None),
        ("/reports", "reports-mobile"),
        ("/segments/AVITO_PERFORMANCE_VAS_EXTENDED_NAME/delete", None),
        ("/users?id=abc", None),
    ]:
        page.goto(live_server + path)
        assert_fits(page, path)
        if name:
            shots(page, name)
    # The user page's Remove buttons are whole and usable.
    page.goto(live_server + "/users/100")
    remove = page.locator("#user-segments").get_by_role("button", name="Remove")
    expect(remove.first).to_be_visible()
    assert remove.first.bounding_box()["x"] + remove.first.bounding_box()["width"] <= MOBILE["width"]
    # On the segment page the forms come before the long tables.
    page.goto(live_server + "/segments/AVITO_PERFORMANCE_VAS_EXTENDED_NAME")
    bulk_form = page.locator("#bulk-add").bounding_box()
    members = page.locator("#members").bounding_box()
    assert page.locator("#segment-settings").bounding_box()["y"] < bulk_form["y"] < members["y"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#members tr", has_text="100").get_by_role("button", name="Remove").click()
    expect(stat(page, "members")).to_have_text("59")
    assert_fits(page, "segment page after a removal")
    page.set_viewport_size(DESKTOP)  # wide: the forms are beside the tables again
    assert page.locator("#bulk-add").bounding_box()["x"] > page.locator("#members").bounding_box()["x"]


# 9 -------------------------------------------------------------------------------------------------------


def test_first_run_demo_data_favicon_and_reports_by_whom(page, live_server, shots, browser, console_errors):
    page.goto(live_server + "/")
    icon = page.request.get(live_server + page.locator("link[rel=icon]").get_attribute("href"))
    assert icon.ok and icon.headers["content-type"].startswith("image/svg+xml")
    expect(page.locator("#first-run")).to_contain_text("No segments yet")
    shots(page, "first-run")
    page.get_by_role("button", name="Load demo data").click()
    expect(page.locator("#flash")).to_contain_text("Demo data loaded: 4 segments")
    expect(page.locator("#segment-table tbody tr")).to_have_count(4)
    expect(page.locator("#segment-table tr", has_text="AVITO_VOICE_MESSAGES")).to_contain_text("200")
    # Reports list: who requested each (the SSO user), and no month to come can be asked for.
    context = browser.new_context(
        viewport=DESKTOP, extra_http_headers={"X-Forwarded-Email": "pm@example.com"}
    )
    pm = context.new_page()
    pm.on("console", lambda m: console_errors.add(m.type, m.text, ""))
    pm.goto(live_server + "/reports")
    expect(pm.locator(".who")).to_contain_text("Signed in as pm@example.com")
    month = pm.get_by_label("Month (history reports)")
    assert month.get_attribute("max") == datetime.now(UTC).strftime("%Y-%m")
    pm.get_by_label("All users' history").check()
    pm.get_by_role("button", name="Request report").click()
    expect(pm.locator("#reports-table tbody tr").first).to_contain_text("pm@example.com")
    context.close()


def test_jobs_strip_reads_without_javascript(browser, live_server):
    context = browser.new_context(java_script_enabled=False, viewport=MOBILE)
    page = context.new_page()
    page.goto(live_server + "/")
    expect(page.locator("#jobs-status")).to_contain_text("Next TTL purge")
    expect(page.locator("#jobs-status")).to_contain_text(re.compile(r"Workers: \d+ alive|No worker running"))
    assert_fits(page, "no-JS page at 390 px")
    context.close()
