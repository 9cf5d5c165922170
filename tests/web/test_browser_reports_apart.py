"""Issue 24 item 6 in a real browser (Debian chromium): reports you can tell apart and *Export
members*, each flow done twice, with back/forward, at 1366 and 390 px, no console error; every
download arrives under its own name and is parsed."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
NAME = re.compile(r"^history-user-4242-\d{4}-\d\d_\d{8}-\d{6}_[0-9a-f]{6}\.csv$")


def parsed(download, separator: str) -> list[list[str]]:
    text = Path(download.path()).read_text(encoding="utf-8")
    assert text.startswith("\ufeff"), text[:20]
    return list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=separator))


def dismiss_flash(page) -> None:
    close = page.locator("#flash").get_by_role("button", name="Dismiss")
    if close.count():
        close.first.click()
    expect(page.locator("#flash .alert")).to_have_count(0)


def test_user_reports_read_apart_and_open_in_a_spreadsheet(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_APART"})
    live_api("POST", "/api/v1/users/4242/segments", {"add": ["AVITO_APART"]})
    page.goto(live_server + "/users/4242")
    card = page.locator("#user-reports-card")
    separator = card.get_by_label("Columns separated by")
    expect(separator).to_have_value(",")  # an English browser: commas
    separator.select_option(";")
    card.get_by_role("button", name="Build CSV report").click()
    first = page.locator("#user-reports li").first
    expect(first.get_by_role("link", name="Download CSV")).to_be_visible(timeout=15_000)
    month = datetime.now(UTC).strftime("%B %Y")
    expect(first.locator(".report-label")).to_have_text(f"User 4242 · {month}")
    expect(first).to_contain_text(
        re.compile(r"requested \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by dashboard · CSV, semicolons")
    )
    dismiss_flash(page)
    with page.expect_download() as info:
        first.get_by_role("link", name="Download CSV").click()
    first_name = info.value.suggested_filename
    assert NAME.match(first_name), first_name
    rows = parsed(info.value, ";")
    assert rows[0] == ["user_id", "segment", "operation", "time_utc", "reason", "actor"]
    assert [r[:3] + r[4:5] for r in rows[1:]] == [["4242", "AVITO_APART", "added", "api"]]
    # A second click, the same month: a second entry, another time and another file name.
    page.wait_for_timeout(1100)  # a second later: the request times differ to the second
    expect(card.get_by_label("Columns separated by")).to_have_value(";")  # the form kept the choice
    card.get_by_role("button", name="Build CSV report").click()
    expect(page.locator("#user-reports li")).to_have_count(2)
    second = page.locator("#user-reports li").first
    expect(second.get_by_role("link", name="Download CSV")).to_be_visible(timeout=15_000)
    times = page.locator("#user-reports li time").all_inner_texts()
    assert len(set(times)) == 2, times
    dismiss_flash(page)
    with page.expect_download() as again:
        second.get_by_role("link", name="Download CSV").click()
    assert NAME.match(again.value.suggested_filename) and again.value.suggested_filename != first_name
    assert parsed(again.value, ";")[1:] == rows[1:]
    shots(page, "reports-apart")
    # Remembered: another page's CSV form starts with semicolons, and after back/forward too.
    page.goto(live_server + "/reports")
    expect(page.locator("#report-form").get_by_label("Columns separated by")).to_have_value(";")
    expect(page.locator("#reports-table tbody tr").first).to_contain_text(f"User 4242 · {month}")
    page.go_back()
    expect(page).to_have_url(live_server + "/users/4242")
    expect(page.locator("#user-reports li")).to_have_count(2)
    page.go_forward()
    expect(page).to_have_url(live_server + "/reports")
    page.set_viewport_size(MOBILE)
    assert_fits(page, "/reports at 390 px")
    shots(page, "reports-apart-list-mobile")
    page.goto(live_server + "/users/4242")
    assert_fits(page, "/users/4242 at 390 px")
    shots(page, "reports-apart-mobile")


def test_export_members_on_the_segment_page(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_EXPORTED", "rollout_percent": 10})
    live_api("POST", "/api/v1/segments/AVITO_EXPORTED/members", {"user_ids": [11, 12, 13]})
    live_api("POST", "/api/v1/segments/AVITO_EXPORTED/members", {"user_ids": [14], "ttl_seconds": 86400})
    page.goto(live_server + "/segments/AVITO_EXPORTED")
    card = page.locator("#members-export")
    expect(card).to_contain_text("The 10% rollout is not listed")
    card.get_by_label("Columns separated by").select_option(",")
    card.get_by_role("button", name="Export members").click()
    expect(page.locator("#flash")).to_contain_text("4 members of AVITO_EXPORTED exported")
    entry = page.locator("#member-exports li").first
    expect(entry.get_by_role("link", name="Download CSV")).to_be_visible(timeout=15_000)
    expect(entry).to_contain_text("Members of AVITO_EXPORTED")
    dismiss_flash(page)
    with page.expect_download() as info:
        entry.get_by_role("link", name="Download CSV").click()
    name = info.value.suggested_filename
    assert re.fullmatch(r"members-AVITO_EXPORTED_\d{8}-\d{6}_[0-9a-f]{6}\.csv", name), name
    rows = parsed(info.value, ",")
    assert rows[0] == ["user_id", "segment", "source", "added_utc", "expires_utc"]
    assert [(r[0], r[2], bool(r[4])) for r in rows[1:]] == [
        ("11", "explicit", False),
        ("12", "explicit", False),
        ("13", "explicit", False),
        ("14", "ttl", True),
    ]
    shots(page, "segment-export")
    # A second click, after a member left: a new export, the old one still listed below it.
    live_api("DELETE", "/api/v1/segments/AVITO_EXPORTED/members", {"user_ids": [12]})
    card.get_by_role("button", name="Export members").click()
    expect(page.locator("#member-exports li")).to_have_count(2)
    expect(page.locator("#flash")).to_contain_text("3 members of AVITO_EXPORTED exported")
    dismiss_flash(page)
    with page.expect_download() as again:
        page.locator("#member-exports li").first.get_by_role("link", name="Download CSV").click()
    assert again.value.suggested_filename != name
    assert [r[0] for r in parsed(again.value, ",")[1:]] == ["11", "13", "14"]
    # Back and forward: the page comes back with both exports listed.
    page.goto(live_server + "/reports")
    expect(page.locator("#reports-table tbody tr").first).to_contain_text("Members of AVITO_EXPORTED")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/segments/AVITO_EXPORTED"))
    expect(page.locator("#member-exports li")).to_have_count(2)
    page.go_forward()
    expect(page).to_have_url(live_server + "/reports")
    page.go_back()
    page.set_viewport_size(MOBILE)
    assert_fits(page, "segment page at 390 px")
    page.locator("#members-export").scroll_into_view_if_needed()
    shots(page, "segment-export-mobile")
    page.set_viewport_size(DESKTOP)
