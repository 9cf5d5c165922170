"""*Export members* of a rule segment in a real browser (issue 29, item 4; Debian chromium): the
card says what the CSV holds, the download lists explicit and rule members with their source, at
1366 and 390 px, no console error."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}
PAID = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]


def test_a_rule_segments_export_from_its_page(page, live_server, live_api, shots):
    # made before the traits: each trait write puts its user in at once (no operation to wait for)
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_PAID_EXPORT", "rules": PAID})
    for user, plan in ((21, "paid"), (22, "paid"), (23, "free")):
        live_api("PUT", f"/api/v1/users/{user}/traits", {"traits": {"plan": plan}})
    live_api("POST", "/api/v1/segments/AVITO_PAID_EXPORT/members", {"user_ids": [30], "ttl_seconds": 86400})
    page.goto(live_server + "/segments/AVITO_PAID_EXPORT")
    card = page.locator("#members-export")
    expect(card).to_contain_text("everyone in the segment now, each user once")
    expect(card).to_contain_text("source column saying which (explicit, ttl or rule)")
    assert_fits(page)
    card.get_by_label("Columns separated by").select_option(",")
    card.get_by_role("button", name="Export members").click()
    expect(page.locator("#flash")).to_contain_text("3 members of AVITO_PAID_EXPORT exported")
    entry = page.locator("#member-exports li").first
    with page.expect_download() as info:
        entry.get_by_role("link", name="Download CSV").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    assert rows[0] == ["user_id", "segment", "source", "added_utc", "expires_utc"]
    assert [(r[0], r[2], bool(r[3]), bool(r[4])) for r in rows[1:]] == [
        ("21", "rule", False, False),
        ("22", "rule", False, False),
        ("30", "ttl", True, True),
    ]
    shots(page, "segment-export-rules")
    page.set_viewport_size(MOBILE)
    page.reload()
    expect(page.locator("#members-export")).to_contain_text("the users its rules put in")
    assert_fits(page)
    shots(page, "segment-export-rules-mobile")
