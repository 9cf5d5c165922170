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
