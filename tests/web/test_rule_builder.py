"""The segment page's rule builder (issue 29, stage 4) through the Flask test client: the
no-JavaScript flow (each button answers with the whole page, the card as typed), the htmx
fragments, every problem placed at its field, the live count and sample, trait key suggestions."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.services.test_rule_segments import run_operations
from webapp.services.membership import rules as rule_matches
from webapp.web import rules as builder

PAID = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]


def card_of(page: str) -> str:
    """The Rules card's HTML, unescaped (what a reader sees, tags included)."""
    start = page.index('<section id="segment-rules"')
    return html_lib.unescape(page[start : page.index("</section>", start)])


def field_names(card: str) -> list[str]:
    return re.findall(r'name="(r\d+c\d+_(?:trait|operator|value|values|flag|case))"', card)


def error_at(card: str, name: str) -> str:
    found = re.search(rf'<div class="field-error" role="alert" id="{name}-error">(.*?)</div>', card, re.S)
    assert found, f"no problem under {name}: {card}"
    return " ".join(re.sub(r"<[^>]+>", " ", found[1]).split())


def push_traits(api, traits: dict[int, dict]) -> None:
    for user, values in traits.items():
        assert api.put(f"/users/{user}/traits", {"traits": values}).status_code == 200


def row(i: int, j: int, trait: str, operator: str, value: str = "", **extra: str) -> dict[str, str]:
    fields = {f"r{i}c{j}_trait": trait, f"r{i}c{j}_operator": operator, f"r{i}c{j}_value": value}
    fields.update({f"r{i}c{j}_{name}": text for name, text in extra.items()})
    return fields


def test_without_javascript_every_button_answers_with_the_page_and_the_card_as_typed(client, csrf, api):
    api.segment("BUILD_PLAIN")
    card = card_of(client.get("/segments/BUILD_PLAIN").get_data(as_text=True))
    assert "No rules: its members are its explicit members." in card and field_names(card) == []

    def press(action: str, **fields: str) -> str:
        response = client.post(
            "/segments/BUILD_PLAIN/rules", data={"csrf_token": csrf, "action": action, **fields}
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        page = response.get_data(as_text=True)
        assert "<html" in page and 'id="segment-settings"' in page  # the whole page
        return card_of(page)

    card = press("add_rule")
    assert "Its rollout is 0%: the rules take nobody until it is raised in Settings" in card
    assert field_names(card) == [
        "r0c0_trait",
        "r0c0_operator",
        "r0c0_value",
        "r0c0_values",
        "r0c0_flag",
        "r0c0_case",
    ]
    typed = row(0, 0, "country", "str_in", values="RU, BY")
    card = press("add_condition:0", **typed)
    assert "r0c1_trait" in field_names(card) and ">RU, BY</textarea>" in card
    assert re.search(r'id="r0c1_trait"[^>]*autofocus', card) and card.count("autofocus") == 1
    assert re.search(r'<option value="str_in" data-kind="list" selected>', card)
    typed |= row(0, 1, "plan", "str_eq", "paid")
    card = press("add_rule", **typed)
    assert "r1c0_trait" in field_names(card) and 'value="paid"' in card
    typed |= row(1, 0, "beta", "bool_eq", flag="true")
    # removing the first rule's first condition renumbers the rest: plan is r0c0 now
    card = press("remove_condition:0:0", **typed)
    assert 'id="r0c0_trait" name="r0c0_trait" value="plan"' in card
    assert 'id="r1c0_trait" name="r1c0_trait" value="beta"' in card and "r0c1_trait" not in card
    card = press("remove_rule:0", **typed)
    assert 'name="r0c0_trait" value="beta"' in card and "r1c0_trait" not in card
    card = press("clear", **typed)
    assert field_names(card) == [] and "+ Add a rule" in card
    # save: post/redirect/get with the message; the card shows the rules in words
    typed = row(0, 0, "country", "str_in", values="RU\nBY") | row(0, 1, "plan", "str_eq", "paid")
    typed |= row(1, 0, "beta", "bool_eq", flag="true")
    saved = client.post("/segments/BUILD_PLAIN/rules", data={"csrf_token": csrf, "action": "save", **typed})
    assert saved.status_code == 302 and saved.headers["Location"].endswith(
        "/segments/BUILD_PLAIN#segment-rules"
    )
    page = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Rules saved; 0 users with traits are being evaluated against them." in page
    card = card_of(page)
    assert "rule 1</span> country in [RU, BY] and plan = paid" in card
    assert "rule 2</span> beta is true" in card
    assert api.get("/segments/BUILD_PLAIN").json["rules"] == [
        {
            "conditions": [
                {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                {"trait": "plan", "operator": "str_eq", "value": "paid"},
            ]
        },
        {"conditions": [{"trait": "beta", "operator": "bool_eq", "value": True}]},
    ]


def test_every_problem_is_worded_next_to_its_field_and_nothing_is_saved(htmx, api):
    api.segment("BUILD_BAD")
    typed = (
        row(0, 0, "", "str_eq", "paid")
        | row(0, 1, "age", "num_gt", "eighteen")
        | row(0, 2, "plan", "str_eq", "")
        | row(1, 0, "app_version", "semver_gte", "5.x")
        | row(1, 1, "signed_up", "date_after", "2026-02-30")
        | row(1, 2, "country", "str_in", values=" , ")
        | row(2, 0, "bad key!", "is_set")
        | row(2, 1, "city", "str_in", values="\n".join(["Moscow", "x" * 300]))
        | row(2, 2, "plan", "nope", "paid")
    )
    response = htmx("/segments/BUILD_BAD/rules", {"action": "save", **typed})
    assert response.status_code == 422
    card = card_of(response.get_data(as_text=True))
    assert "<html" not in response.get_data(as_text=True)
    assert error_at(card, "r0c0_trait") == "Choose a trait."
    assert error_at(card, "r0c1_value") == "Enter a number, such as 18 or 4.5."
    assert error_at(card, "r0c2_value") == "Enter a value to compare with."
    assert error_at(card, "r1c0_value") == "Enter a version, such as 5.2, 5.2.1 or 1.0.0-beta.2."
    assert error_at(card, "r1c1_value") == "Enter a date, such as 2026-11-01 or 2026-11-01T10:00:00+03:00."
    assert error_at(card, "r1c2_value") == "Enter at least one value."
    assert error_at(card, "r2c0_trait").startswith("A trait name has letters, digits")
    assert error_at(card, "r2c1_value") == "Value 2: enter at most 256 characters."
    assert error_at(card, "r2c2_operator") == "Choose how to compare from the list."
    assert 'id="r0c1_value" name="r0c1_value" value="eighteen"' in card  # kept as typed
    assert 'aria-invalid="true" aria-describedby="r0c1_value-error"' in card
    assert api.get("/segments/BUILD_BAD").json["rules"] is None
    # a rule with no condition left is named on the rule; the count line says what is wrong
    typed = row(0, 0, "plan", "str_eq", "")
    response = htmx("/segments/BUILD_BAD/rules/audience", typed)
    text = " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())
    assert text == "Not counted yet. Rule 1, condition 1: Enter a value to compare with."


def test_a_date_problem_is_worded_for_a_rule_not_for_an_expiry(htmx, api):
    api.segment("BUILD_DATE")
    response = htmx(
        "/segments/BUILD_DATE/rules", {"action": "check", **row(0, 0, "since", "date_after", "soon")}
    )
    assert response.status_code == 422
    said = error_at(card_of(response.get_data(as_text=True)), "r0c0_value")
    assert said == "Enter a date, such as 2026-11-01 or 2026-11-01T10:00:00+03:00."


def test_the_count_and_sample_follow_the_typed_rules(htmx, api, db_session):
    api.segment("BUILD_COUNT")
    push_traits(api, {user: {"plan": "paid" if user % 3 == 0 else "free"} for user in range(1, 61)})
    push_traits(api, {61: {"country": "RU"}})

    def line(**typed: str) -> str:
        response = htmx("/segments/BUILD_COUNT/rules/audience", typed)
        assert response.status_code == 200
        return " ".join(re.sub(r"<[^>]+>", " ", html_lib.unescape(response.get_data(as_text=True))).split())

    said = line(**row(0, 0, "plan", "str_eq", "paid"))
    assert (
        said
        == "20 users with traits match these rules (of 61 with traits); e.g. 3 , 6 , 9 , 12 , 15 , 18 , 21 , 24 , 27 , 30 , …"
    )
    # an inexact filter (any case): the same users, confirmed in Python
    assert line(**row(0, 0, "plan", "str_eq", "PAID", case="1")) == said
    assert line(**row(0, 0, "plan", "str_eq", "PAID")).startswith("0 users with traits match")
    # two rules (or): paid, or from RU
    both = line(**row(0, 0, "plan", "str_eq", "paid"), **row(1, 0, "country", "is_set"))
    assert both.startswith("21 users with traits match these rules (of 61 with traits)")
    assert (
        rule_matches.count_matching(
            db_session,
            builder.raw_rules(
                builder.rows_from_form(row(0, 0, "plan", "str_eq", "paid") | row(1, 0, "country", "is_set"))
            ),
        )
        == 21
    )
    one = line(**row(0, 0, "country", "str_eq", "RU"))
    assert one == "1 user with traits matches these rules (of 61 with traits); e.g. 61 ."
    response = htmx("/segments/BUILD_COUNT/rules/audience", row(0, 0, "plan", "str_eq", "paid"))
    assert 'href="/users/3"' in response.get_data(as_text=True)


def test_a_count_that_takes_too_long_says_so_and_leaves_the_transaction_usable(db_session):
    db_session.execute(
        sa.text(
            "INSERT INTO user_traits (user_id, traits, updated_at) SELECT g, "
            "jsonb_build_object('signed_up', '2026-01-' || lpad((g % 28 + 1)::text, 2, '0')), now() "
            "FROM generate_series(1, 100000) g"
        )
    )
    before = db_session.execute(sa.text("SHOW statement_timeout")).scalar()
    rules = [{"conditions": [{"trait": "signed_up", "operator": "date_after", "value": "2026-01-10"}]}]
    assert rule_matches.audience(db_session, rules, timeout_ms=1) is None
    assert db_session.execute(sa.text("SHOW statement_timeout")).scalar() == before
    found = rule_matches.audience(db_session, rules)  # the transaction goes on, the timeout put back
    assert found is not None and found.with_traits == 100_000
    assert found.matching == sum(1 for g in range(1, 100_001) if g % 28 + 1 > 10)
    assert found.sample == tuple(range(10, 20))
    assert db_session.execute(sa.text("SHOW statement_timeout")).scalar() == before
    # an inexact filter (any case): its rows are confirmed in Python, within the time too
    loose = [
        {
            "conditions": [
                {
                    "trait": "signed_up",
                    "operator": "str_starts_with",
                    "value": "2026-01-1",
                    "case_insensitive": True,
                }
            ]
        }
    ]
    assert rule_matches.audience(db_session, loose, timeout_ms=1) is None
    found = rule_matches.audience(db_session, loose)
    assert found is not None and found.matching == sum(1 for g in range(1, 100_001) if 10 <= g % 28 + 1 <= 19)
    assert db_session.execute(sa.text("SHOW statement_timeout")).scalar() == before


def test_trait_keys_are_suggested_by_prefix(client, api):
    api.segment("BUILD_KEYS")
    push_traits(api, {1: {"plan": "paid", "platform": "ios", "country": "RU"}})
    page = client.get("/segments/BUILD_KEYS").get_data(as_text=True)
    assert re.findall(r'<datalist id="trait-keys">(.*?)</datalist>', page)[0] == (
        '<option value="country"><option value="plan"><option value="platform">'
    )
    assert add_rule_card_has_datalist(client, page)
    found = client.get("/segments/BUILD_KEYS/rules/trait-keys?r0c3_trait=pl").get_data(as_text=True)
    assert found.split() == ["<option", 'value="plan"><option', 'value="platform">']
    assert (
        client.get("/segments/BUILD_KEYS/rules/trait-keys?r0c0_trait=%25").get_data(as_text=True).strip()
        == ""
    )


def add_rule_card_has_datalist(client, page: str) -> bool:
    return 'list="trait-keys"' in page or "+ Add a rule" in page


def test_with_htmx_the_card_comes_back_alone_and_a_save_refreshes_the_page(htmx, api, db_session):
    api.segment("BUILD_HTMX", rollout_percent=100)
    # (only paid users have traits, and no one else is known: nobody leaves, so no confirmation)
    push_traits(api, {1: {"plan": "paid"}, 3: {"plan": "paid"}})
    added = htmx("/segments/BUILD_HTMX/rules", {"action": "add_rule"})
    text = added.get_data(as_text=True)
    assert "rules-zero-rollout" not in text
    assert (
        added.status_code == 200
        and "<html" not in text
        and text.lstrip().startswith('<section id="segment-rules"')
    )
    assert "r0c0_trait" in text and "HX-Trigger" not in added.headers
    saved = htmx("/segments/BUILD_HTMX/rules", {"action": "save", **row(0, 0, "plan", "str_eq", "paid")})
    body = html_lib.unescape(saved.get_data(as_text=True))
    assert saved.status_code == 200 and saved.headers["HX-Trigger"] == "segment-changed"
    assert "Rules saved; 2 users with traits are being evaluated against them." in body
    assert 'hx-swap-oob="true"' in body
    assert "rule 1</span> plan = paid" in body
    assert "Evaluating the users with traits of BUILD_HTMX: 0 of 2" in body  # its progress, polling
    run_operations(db_session)
    assert [s["slug"] for s in api.active(1)] == ["BUILD_HTMX"] and api.active(2) == []
    # the same rules again: nothing to save, said
    again = htmx("/segments/BUILD_HTMX/rules", {"action": "save", **row(0, 0, "plan", "str_eq", "paid")})
    assert "The rules are as they were: nothing to save." in again.get_data(as_text=True)


def test_stored_rules_come_back_into_the_builder_unchanged(htmx, api):
    """Every operator's stored operand is shown in its field and saved back as it was: a save of
    an untouched builder changes nothing."""
    rules = [
        {
            "conditions": [
                {"trait": "city", "operator": "str_in", "values": ["Nizhny Novgorod, RU", "Kazan"]},
                {"trait": "plan", "operator": "str_eq", "value": "Paid", "case_insensitive": True},
                {"trait": "age", "operator": "num_gte", "value": 18.5},
                {"trait": "visits", "operator": "num_lt", "value": 100},
            ]
        },
        {
            "conditions": [
                {"trait": "app_version", "operator": "semver_gte", "value": "5.2.0-beta.2"},
                {"trait": "signed_up", "operator": "date_before", "value": "2026-11-01T10:00:00+03:00"},
                {"trait": "beta", "operator": "bool_eq", "value": False},
                {"trait": "email", "operator": "not_set"},
                {"trait": "country", "operator": "str_not_in", "values": ["RU", "BY"]},
            ]
        },
    ]
    api.segment("BUILD_ROUND", rules=rules)
    page = htmx("/segments/BUILD_ROUND/rules", {"action": "check"})  # (no rows sent: none)
    rows = builder.rows_of(api.get("/segments/BUILD_ROUND").json["rules"])
    assert builder.raw_rules(rows) == rules
    form = {}
    for i, rule in enumerate(rows):
        for j, r in enumerate(rule):
            form |= row(
                i,
                j,
                r.trait,
                r.operator,
                r.value,
                values=r.values,
                flag=r.flag,
                **({"case": "1"} if r.case else {}),
            )
    assert page.status_code == 200
    same = htmx("/segments/BUILD_ROUND/rules", {"action": "save", **form})
    assert "The rules are as they were: nothing to save." in same.get_data(as_text=True)


def test_limits_and_garbage_never_fail(htmx, client, csrf, api):
    api.segment("BUILD_LIMITS")
    typed: dict[str, str] = {}
    for i in range(10):
        typed |= row(i, 0, "plan", "str_eq", "paid")
    refused = htmx("/segments/BUILD_LIMITS/rules", {"action": "add_rule", **typed})
    assert refused.status_code == 200 and "A segment can have at most 10 rules." in refused.get_data(
        as_text=True
    )
    typed = {}
    for j in range(20):
        typed |= row(0, j, "plan", "str_eq", "paid")
    refused = htmx("/segments/BUILD_LIMITS/rules", {"action": "add_condition:0", **typed})
    assert "A rule can have at most 20 conditions." in refused.get_data(as_text=True)
    for junk in (
        {"action": "remove_condition:x:"},
        {"action": "remove_rule:99999999999"},
        {"action": "add_condition:3"},
        {"action": "bogus", "r999c999_trait": "x", "r1c0_case": "yes"},
        {"action": "save", "r0c0_operator": "num_eq", "r0c0_trait": "n", "r0c0_value": "9" * 5000},
        {"action": "save", "r0c0_operator": "num_eq", "r0c0_trait": "n", "r0c0_value": "1e999"},
        {"action": "save", "r0c0_operator": "str_eq", "r0c0_trait": "n", "r0c0_value": "a\x00b"},
        {"action": "check", "r0c0_operator": "bool_eq", "r0c0_trait": "n", "r0c0_flag": "maybe"},
    ):
        for answer in (
            htmx("/segments/BUILD_LIMITS/rules", junk),
            client.post("/segments/BUILD_LIMITS/rules", data={"csrf_token": csrf, **junk}),
            htmx("/segments/BUILD_LIMITS/rules/audience", junk),
        ):
            assert answer.status_code in (200, 422), (junk, answer.status_code)
    assert api.get("/segments/BUILD_LIMITS").json["rules"] is None


def test_a_segment_with_pending_scheduled_changes_says_why_its_rules_cannot_be_saved(htmx, api):
    api.segment("BUILD_SCHEDULED", rollout_percent=0)
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (
        api.post("/segments/BUILD_SCHEDULED/schedule", {"at": soon, "rollout_percent": 5}).status_code == 201
    )
    refused = htmx(
        "/segments/BUILD_SCHEDULED/rules", {"action": "save", **row(0, 0, "plan", "str_eq", "paid")}
    )
    assert refused.status_code == 422
    card = card_of(refused.get_data(as_text=True))
    assert (
        '<div class="alert alert-error" role="alert"><p>Cancel its 1 scheduled rollout change(s) before giving it rules.</p>'
        in card
    )
    assert 'value="paid"' in card  # the typed rules stay
    assert api.get("/segments/BUILD_SCHEDULED").json["rules"] is None


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} in the answer"
    return found[1]


def test_a_save_that_takes_users_out_is_confirmed_first_with_the_numbers(htmx, client, csrf, api, db_session):
    push_traits(api, {user: {"plan": "paid" if user % 3 == 0 else "free"} for user in range(1, 31)})
    api.segment("BUILD_CONFIRM", rules=PAID)
    run_operations(db_session)
    assert len(api.get("/segments/BUILD_CONFIRM").json["rules"]) == 1
    free = row(0, 0, "plan", "str_eq", "free")
    asked = htmx("/segments/BUILD_CONFIRM/rules", {"action": "save", **free})
    page = html_lib.unescape(asked.get_data(as_text=True))
    assert asked.status_code == 200 and 'id="rules-confirm"' in page and "HX-Trigger" not in asked.headers
    said = " ".join(re.sub(r"<[^>]+>", " ", page.split('id="rules-confirm"', 1)[1]).split())
    assert "10 will leave, 20 will join BUILD_CONFIRM" in said
    assert "once its users with traits are evaluated again" in said
    assert 'value="free"' in page  # the typed rules stay in the builder
    assert api.get("/segments/BUILD_CONFIRM").json["rules"] == PAID  # nothing saved yet
    version, key = hidden(page, "catalog_version"), hidden(page, "confirmed_rules")
    # the rules typed again after the numbers were shown: new numbers, nothing saved
    other = row(0, 0, "plan", "str_eq", "trial")
    again = htmx(
        "/segments/BUILD_CONFIRM/rules",
        {"confirmed": "1", "catalog_version": version, "confirmed_rules": key, **other},
    )
    again_page = html_lib.unescape(again.get_data(as_text=True))
    assert 'id="rules-confirm"' in again_page and "10 will leave, 0 will join" in " ".join(
        re.sub(r"<[^>]+>", " ", again_page).split()
    )
    assert api.get("/segments/BUILD_CONFIRM").json["rules"] == PAID
    # the segments changed since the numbers: 409 impact_changed, the new numbers to confirm
    api.segment("BUILD_CONFIRM_OTHER")
    moved = htmx(
        "/segments/BUILD_CONFIRM/rules",
        {"confirmed": "1", "catalog_version": version, "confirmed_rules": key, **free},
    )
    moved_page = html_lib.unescape(moved.get_data(as_text=True))
    assert moved.status_code == 200 and "The segments changed since the last numbers." in moved_page
    assert hidden(moved_page, "catalog_version") != version
    assert api.get("/segments/BUILD_CONFIRM").json["rules"] == PAID
    # Confirm with those numbers: saved, the page refreshes, the message counts who is evaluated
    done = htmx(
        "/segments/BUILD_CONFIRM/rules",
        {
            "confirmed": "1",
            "catalog_version": hidden(moved_page, "catalog_version"),
            "confirmed_rules": hidden(moved_page, "confirmed_rules"),
            **free,
        },
    )
    assert done.status_code == 200 and done.headers["HX-Trigger"] == "segment-changed"
    assert "Rules saved; 30 users with traits are being evaluated against them." in done.get_data(
        as_text=True
    )
    assert api.get("/segments/BUILD_CONFIRM").json["rules"][0]["conditions"][0]["value"] == "free"
    run_operations(db_session)
    assert [s["slug"] for s in api.active(1)] == ["BUILD_CONFIRM"] and api.active(3) == []
    # without JavaScript: the whole page with the numbers, then the confirmed save redirects
    back = row(0, 0, "plan", "str_eq", "paid")
    asked = client.post("/segments/BUILD_CONFIRM/rules", data={"csrf_token": csrf, "action": "save", **back})
    page = html_lib.unescape(asked.get_data(as_text=True))
    assert "<html" in page and 'id="rules-confirm"' in card_of(page)
    saved = client.post(
        "/segments/BUILD_CONFIRM/rules",
        data={
            "csrf_token": csrf,
            "confirmed": "1",
            "catalog_version": hidden(page, "catalog_version"),
            "confirmed_rules": hidden(page, "confirmed_rules"),
            **back,
        },
    )
    assert saved.status_code == 302
    assert api.get("/segments/BUILD_CONFIRM").json["rules"] == PAID


def test_removing_every_rule_and_saving_removes_the_rules(htmx, api, db_session):
    push_traits(api, {user: {"plan": "paid" if user % 2 else "free"} for user in range(1, 11)})
    api.segment("BUILD_REMOVE", rules=PAID)
    run_operations(db_session)
    cleared = htmx("/segments/BUILD_REMOVE/rules", {"action": "clear", **row(0, 0, "plan", "str_eq", "paid")})
    card = card_of(cleared.get_data(as_text=True))
    assert field_names(card) == [] and "saving removes this segment's rules" in card, card
    assert "Save: remove the rules" in card
    # nobody leaves (a 100% rollout takes everyone in): saved at once
    removed = htmx("/segments/BUILD_REMOVE/rules", {"action": "save"})
    assert removed.status_code == 200 and removed.headers["HX-Trigger"] == "segment-changed"
    assert (
        "Rules removed: BUILD_REMOVE answers by its rollout and explicit members again"
        in html_lib.unescape(removed.get_data(as_text=True))
    )
    assert api.get("/segments/BUILD_REMOVE").json["rules"] is None


def test_without_javascript_a_refused_save_is_the_page_with_the_problems_at_their_fields(client, csrf, api):
    api.segment("BUILD_NOJS_BAD")
    typed = row(0, 0, "age", "num_gte", "adult") | row(0, 1, "", "is_set")
    refused = client.post(
        "/segments/BUILD_NOJS_BAD/rules", data={"csrf_token": csrf, "action": "save", **typed}
    )
    page = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "<html" in page and 'id="segment-settings"' in page
    card = card_of(page)
    assert error_at(card, "r0c0_value") == "Enter a number, such as 18 or 4.5."
    assert error_at(card, "r0c1_trait") == "Choose a trait."
    assert "<details" not in card  # no saved rules: the builder is not folded
    assert api.get("/segments/BUILD_NOJS_BAD").json["rules"] is None


TYPED = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "plan", "5.2", "2026-11-01", "18", "1e999", "-0", "true", "a, b", "x\r\ny", "9" * 400]
)


@st.composite
def typed_forms(draw: st.DrawFn) -> dict[str, str]:
    """What a form could post: rows at any positions (gaps too), any text in any field."""
    form: dict[str, str] = {}
    for i in draw(st.lists(st.integers(0, 12), max_size=4, unique=True)):
        for j in draw(st.lists(st.integers(0, 22), min_size=1, max_size=3, unique=True)):
            n = f"r{i}c{j}_"
            form[n + "trait"] = draw(TYPED | st.sampled_from(["plan", "age", "bad key"]))
            form[n + "operator"] = draw(st.sampled_from([*builder.OPERATOR_WORDS, "nope", ""]))
            for part in ("value", "values", "flag"):
                if draw(st.booleans()):
                    form[n + part] = draw(TYPED)
            if draw(st.booleans()):
                form[n + "case"] = draw(st.sampled_from(["1", "", "yes"]))
    form["action"] = draw(
        st.sampled_from(["check", "save", "add_rule", "add_condition:1", "remove_rule:0", "x:y:z"])
    )
    return form


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=typed_forms())
def test_any_form_gets_the_card_with_each_problem_at_a_field_it_shows(htmx, api, form):
    if api.get("/segments/BUILD_ANY").status_code == 404:
        api.segment("BUILD_ANY", rollout_percent=0)  # (nobody leaves: a valid form saves at once)
    answer = htmx("/segments/BUILD_ANY/rules", form)
    assert answer.status_code in (200, 422), answer.get_data(as_text=True)[:500]
    page = answer.get_data(as_text=True)
    card = card_of(page)  # every answer is the card (a save's too, with htmx)
    shown = set(re.findall(r'id="(r\d+c\d+_(?:trait|operator|value|case))"', card))
    shown |= {f"{name}" for name in re.findall(r'id="(r\d+c\d+_)row"', card)}
    for field in re.findall(r'class="field-error" role="alert" id="([^"]+)-error"', card):
        if re.fullmatch(r"r\d+", field):  # a rule's own problem: the rule is shown
            assert f'id="rule-{field[1:]}"' in card
        else:
            assert field in shown, (field, form)
    if answer.status_code == 422:
        assert "field-error" in card or "alert-error" in card
