"""What a product manager does, in a real browser."""

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser


def test_create_segment_search_and_delete(page, live_server, shots, live_api, console_errors):
    console_errors.allow(422)  # the same slug twice: the form comes back with its problem
    page.goto(live_server + "/")
    expect(page).to_have_title(re.compile("Segments"))
    form = page.locator("#create-segment")
    form.get_by_label("Slug").fill("AVITO_VOICE_MESSAGES")
    form.get_by_label("Description").fill("Voice messages in chat")
    form.get_by_role("button", name="Create segment").click()
    expect(page.locator("#flash")).to_contain_text("Segment AVITO_VOICE_MESSAGES created.")
    expect(page.locator("#segment-table")).to_contain_text("AVITO_VOICE_MESSAGES")
    # The same slug again: the server's 422/409 fragment is swapped into the form.
    form = page.locator("#create-segment")
    form.get_by_label("Slug").fill("AVITO_VOICE_MESSAGES")
    form.get_by_role("button", name="Create segment").click()
    expect(page.locator("#create-segment .field-error")).to_contain_text(
        "A segment called AVITO_VOICE_MESSAGES already exists: choose another slug."
    )
    page.locator("#create-segment").get_by_label("Slug").fill("AVITO_DISCOUNT_30")
    page.locator("#create-segment").get_by_label("Automatic rollout, % of all users").fill("12.5")
    page.locator("#create-segment").get_by_role("button", name="Create segment").click()
    expect(page.locator("#segment-table")).to_contain_text("12.5%")
    # Search as you type (debounced htmx request, only the table is swapped).
    page.get_by_placeholder("Search slug or description…").fill("voice")
    expect(page.locator("#segment-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=voice"))
    shots(page, "segments-search")
    page.get_by_placeholder("Search slug or description…").fill("")
    expect(page.locator("#segment-table tbody tr")).to_have_count(2)
    shots(page, "segments")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_fits(page)
    shots(page, "segments-mobile")
    page.set_viewport_size({"width": 1366, "height": 900})
    # Delete with a confirmation that says how many members leave.
    live_api("POST", "/api/v1/users/5/segments", {"add": ["AVITO_DISCOUNT_30"]})
    page.goto(live_server + "/segments/AVITO_DISCOUNT_30/delete")
    expect(page.locator("form.card")).to_contain_text("1 explicit member will leave")
    shots(page, "delete-confirm")
    page.get_by_label("Type").fill("AVITO_DISCOUNT_30")
    page.get_by_role("button", name="Delete segment").click()
    expect(page.locator("#flash")).to_contain_text("Segment AVITO_DISCOUNT_30 deleted; 1 member left it.")
    expect(page.locator("#segment-table")).not_to_contain_text("AVITO_DISCOUNT_30")


def test_user_ttl_add_remove_and_monthly_report(page, live_server, shots, live_api):
    page.goto(live_server + "/")
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_PERFORMANCE_VAS", "description": "Performance VAS"})
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_50", "rollout_percent": 100})
    page.get_by_placeholder("User id…").fill("1001")
    page.get_by_role("button", name="Find user").click()
    expect(page).to_have_url(live_server + "/users/1001")
    # htmx (a deferred script) binds the slug field's "input" trigger at DOMContentLoaded: typing before it
    # would send no request (seen in CI)
    page.wait_for_load_state("domcontentloaded")
    expect(page.locator("#user-segments")).to_contain_text("AVITO_DISCOUNT_50")  # via the 100% rollout
    add = page.locator("#add-segment")
    add.get_by_label("Segment").fill("AVITO_PERF")
    # autocomplete suggestions arrived (a loaded 2-core machine can take a while: a wait, not a limit)
    expect(page.locator("#slug-options option")).to_have_count(1, timeout=20_000)
    add.get_by_label("Segment").fill("AVITO_PERFORMANCE_VAS")
    add.get_by_label("Expires after").select_option(label="1 day")
    add.get_by_role("button", name="Add").click()
    expect(page.locator("#flash")).to_contain_text("Added to AVITO_PERFORMANCE_VAS.")
    row = page.locator("#user-segments tr", has_text="AVITO_PERFORMANCE_VAS")
    expect(row).to_contain_text("explicit")
    expect(row).to_contain_text(re.compile(r"in 23 h|in 1 d"))
    expect(page.locator("#user-history")).to_contain_text("AVITO_PERFORMANCE_VAS")
    shots(page, "user")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_fits(page)
    shots(page, "user-mobile")
    page.set_viewport_size({"width": 1366, "height": 900})
    # Remove it (htmx confirm dialog) and see it gone.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    expect(page.locator("#flash")).to_contain_text("Removed from AVITO_PERFORMANCE_VAS.")
    expect(page.locator("#user-segments")).not_to_contain_text("AVITO_PERFORMANCE_VAS")
    # Report for this month: a progress bar polled by htmx until the download button appears.
    page.get_by_role("button", name="Build CSV report").click()
    download_button = page.get_by_role("link", name="Download CSV")
    expect(download_button).to_be_visible(timeout=15_000)
    with page.expect_download() as info:
        download_button.click()
    # the dashboard's CSV (issue 24): BOM, "," for an English browser, reason and actor columns
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=","))
    assert rows[0] == ["user_id", "segment", "operation", "time_utc", "reason", "actor"]
    operations = [(r[1], r[2]) for r in rows[1:]]
    assert operations == [
        ("AVITO_DISCOUNT_50", "added"),
        ("AVITO_PERFORMANCE_VAS", "added"),
        ("AVITO_PERFORMANCE_VAS", "removed"),
    ]
    assert info.value.suggested_filename.startswith("history-user-1001-")


def test_bulk_upload_ten_thousand_ids(page, live_server, shots, tmp_path, live_api):
    page.goto(live_server + "/")
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_BULK", "description": "Bulk upload"})
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\n" + "\n".join(str(10_000 + i) for i in range(10_000)) + "\n")
    page.goto(live_server + "/segments/AVITO_BULK")
    form = page.locator("#bulk-add")
    form.locator("input[type=file]").set_input_files(str(ids))
    form.get_by_label("Expires after").select_option(label="7 days")
    form.get_by_role("button", name="Add to AVITO_BULK").click()
    expect(page.locator("#flash")).to_contain_text("10,000 added", timeout=30_000)
    expect(page.locator("#members tbody tr").first).to_contain_text("10000")
    expect(page.locator("#members")).to_contain_text("in 7 d")  # a 7-day TTL reads 7 days, not "6 d"
    assert live_api("GET", "/api/v1/segments/AVITO_BULK")["member_count"] == 10_000
    page.reload()
    expect(page.locator(".stat").first).to_contain_text("10,000")
    shots(page, "segment")


def test_reports_page_and_api_docs(page, live_server, shots):
    page.goto(live_server + "/reports")
    page.get_by_label("All users' history").check()
    page.get_by_role("button", name="Request report").click()
    expect(page.locator("#flash")).to_contain_text("Report queued")
    page.goto(live_server + "/reports")
    expect(page.get_by_role("link", name="Download CSV").first).to_be_visible(timeout=15_000)
    shots(page, "reports")
    page.goto(live_server + "/api/docs")
    expect(page.locator(".swagger-ui")).to_contain_text("Segments API", timeout=15_000)
    shots(page, "api-docs")
