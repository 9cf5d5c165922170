"""The user page shows the user's traits (issue 29, stage 1): a read-only table, at 1366 px and
390 px, in Debian's chromium."""

import pytest
from playwright.sync_api import expect

from tests.support.layout import assert_fits

pytestmark = pytest.mark.browser

MOBILE = {"width": 390, "height": 844}


def test_the_user_page_shows_the_users_traits(page, live_server, live_api, shots):
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_TRAITS_SHOWN"})
    live_api("POST", "/api/v1/users/4100/segments", {"add": ["AVITO_TRAITS_SHOWN"]})
    rules = [
        {"conditions": [{"trait": "beta", "operator": "bool_eq", "value": False}]},
        {
            "conditions": [
                {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                {"trait": "plan", "operator": "str_eq", "value": "paid"},
            ]
        },
    ]
    # a rule segment made before the traits: the user is in by its rules at the traits' write
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_RU_PAID", "rules": rules})
    traits = {
        "country": "RU",
        "plan": "paid",
        "app_version": "5.2.1",
        "age": 31,
        "beta": True,
        "flag_as_text": "true",
        "referrer.campaign-name": "autumn_sale_2026_with_a_rather_long_campaign_identifier",
    }
    page.request.fetch(live_server + "/api/v1/users/4100/traits", method="PUT", data={"traits": traits})
    page.goto(live_server + "/users/4100")
    table = page.locator("#user-traits table")
    expect(table).to_be_visible()
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(len(traits))
    expect(rows.nth(0)).to_contain_text("age")  # sorted by key
    shown = {
        row.locator("td").nth(0).inner_text(): (
            row.locator("td").nth(1).inner_text(),
            row.locator("td").nth(2).inner_text(),
        )
        for row in rows.all()
    }
    assert shown["beta"] == ("true", "boolean") and shown["flag_as_text"] == ("true", "string")
    assert shown["age"] == ("31", "number") and shown["country"] == ("RU", "string")
    # why the user is in the rule segment, in words, beside its badge
    expect(page.locator("#user-segments")).to_contain_text("rule 2: country in [RU, BY] and plan = paid")
    assert_fits(page)
    shots(page, "user-traits")
    page.set_viewport_size(MOBILE)
    page.reload()
    expect(page.locator("#user-traits")).to_contain_text("autumn_sale_2026")
    assert_fits(page)
    # the long value wraps inside its card instead of running past its edge
    assert page.evaluate(
        """() => [...document.querySelectorAll('#user-traits td')].every(
            td => td.scrollWidth <= td.clientWidth + 1 && td.getBoundingClientRect().right <= innerWidth)"""
    )
    shots(page, "user-traits-mobile")
    # a user with none: said in words
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(live_server + "/users/4101")
    expect(page.locator("#user-traits")).to_contain_text("No traits are stored for user 4101.")


def test_the_user_history_names_the_trait_or_rule_change_that_moved_the_user(
    page, live_server, live_api, shots
):
    """Issue 29, item 4, in the browser: the rule entries of the user page's history say which
    trait keys or which segment's rules moved the user, by whom, each a link that goes there;
    the history fits at 1366 and 390 px, and back/forward return to the page."""
    paid = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]
    live_api("POST", "/api/v1/segments", {"slug": "AVITO_WHY_PAID", "rules": paid})
    crm = {"X-Actor": "crm"}
    page.request.fetch(
        live_server + "/api/v1/users/4200/traits",
        method="PUT",
        data={"traits": {"plan": "paid", "country": "RU"}},
        headers=crm,
    )
    gold = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "gold"}]}]
    page.request.fetch(
        live_server + "/api/v1/segments/AVITO_WHY_PAID",
        method="PATCH",
        data={"rules": gold},
        headers={"X-Actor": "alice"},
    )
    history = page.locator("#user-history")
    causes = history.locator("a.cause")
    for _ in range(60):  # (the worker re-evaluates the segment for its new rules: the user leaves)
        page.goto(live_server + "/users/4200")
        if causes.count() == 2:
            break
        page.wait_for_timeout(500)
    expect(causes).to_have_count(2)
    expect(causes.nth(0)).to_have_text("AVITO_WHY_PAID's rules changed")  # (newest first)
    expect(causes.nth(1)).to_have_text("traits country, plan changed")
    expect(history).to_contain_text("by api (X-Actor: alice)")
    expect(history).to_contain_text("by api (X-Actor: crm)")
    assert_fits(page)
    shots(page, "user-history-causes")
    causes.nth(1).click()  # the trait cause: the user's own traits, on the same page
    expect(page).to_have_url(live_server + "/users/4200#user-traits")
    expect(page.locator("#user-traits")).to_contain_text("paid")
    causes.nth(0).click()  # the rule cause: the segment's activity
    expect(page).to_have_url(live_server + "/segments/AVITO_WHY_PAID#segment-activity")
    expect(page.locator("#segment-activity")).to_contain_text("alice")
    page.go_back()
    expect(page.locator("#user-history a.cause")).to_have_count(2)
    page.go_forward()
    expect(page).to_have_url(live_server + "/segments/AVITO_WHY_PAID#segment-activity")
    page.set_viewport_size(MOBILE)
    page.goto(live_server + "/users/4200")
    expect(causes).to_have_count(2)
    assert_fits(page)
    assert page.evaluate(
        """() => [...document.querySelectorAll('#user-history li')].every(
            li => li.getBoundingClientRect().right <= innerWidth)"""
    )
    shots(page, "user-history-causes-mobile")
