"""Dashboard pages and htmx fragments through the Flask test client."""

import html
import io
import re

from webapp.services.rollout import buckets as rollout


def make(api, slug, **fields):
    return api.segment(slug, **fields)


def test_pages_render(client, api):
    make(api, "PAGE_ONE", description="First")
    api.change(42, ["PAGE_ONE"])
    for path, needle in [
        ("/", "PAGE_ONE"),
        ("/segments/PAGE_ONE", "Members"),
        ("/users/42", "User 42"),
        ("/reports", "New report"),
        ("/segments/PAGE_ONE/delete", "1 explicit member"),
        ("/fragments/jobs-status", "Next TTL purge"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert needle in response.get_data(as_text=True), path
    assert client.get("/users?id=42").headers["Location"].endswith("/users/42")


def test_missing_things_are_readable_pages(client):
    for path in ("/segments/NOPE", "/users/-5", "/users/abc", "/reports/zzz/status"):
        response = client.get(path)
        assert response.status_code in (404, 422)
        assert response.mimetype == "text/html" and "alert" in response.get_data(as_text=True)


def test_post_without_csrf_token_is_400_and_changes_nothing(client, api):
    response = client.post("/segments", data={"slug": "NO_TOKEN"})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert api.get("/segments/NO_TOKEN").status_code == 404
    make(api, "KEEP")
    client.post("/segments/KEEP/delete", data={"confirm": "KEEP"})
    assert api.get("/segments/KEEP").status_code == 200


def test_create_segment_htmx_success_and_422_fragment(htmx, api):
    bad = htmx("/segments", {"slug": "bad slug", "rollout_percent": "120"})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'id="create-segment"' in html and "field-error" in html and 'aria-invalid="true"' in html
    assert "<html" not in html  # a fragment, not a page
    ok = htmx("/segments", {"slug": "FROM_DASH", "description": "d", "rollout_percent": "12.5"})
    html = ok.get_data(as_text=True)
    assert ok.status_code == 200 and 'hx-swap-oob="true"' in html and "FROM_DASH" in html
    assert "Segment FROM_DASH created." in html
    assert api.get("/segments/FROM_DASH").json["rollout_percent"] == 12.5


def test_plain_form_post_redirects_with_flash(client, csrf, api):
    response = client.post(
        "/segments", data={"slug": "PLAIN_POST", "csrf_token": csrf}, follow_redirects=True
    )
    assert "Segment PLAIN_POST created." in response.get_data(as_text=True)
    failed = client.post("/segments", data={"slug": "PLAIN_POST", "csrf_token": csrf}, follow_redirects=True)
    assert "already exists" in failed.get_data(as_text=True)


def test_search_returns_only_the_table(client, api):
    make(api, "SEARCH_ALPHA")
    make(api, "SEARCH_BETA")
    response = client.get("/?q=alpha", headers={"HX-Request": "true", "HX-Target": "segment-table"})
    html = response.get_data(as_text=True)
    assert "SEARCH_ALPHA" in html and "SEARCH_BETA" not in html and "<html" not in html


def test_bulk_add_paste_and_upload(htmx, api):
    make(api, "BULK_DASH")
    pasted = htmx("/segments/BULK_DASH/members", {"user_ids": "1, 2 3\n4;5", "ttl_seconds": "86400"})
    assert pasted.status_code == 200 and "5 added" in pasted.get_data(as_text=True)
    upload = io.BytesIO(b"user_id\n" + b"\n".join(str(i).encode() for i in range(1, 1001)))
    uploaded = htmx(
        "/segments/BULK_DASH/members", {"file": (upload, "ids.csv")}, content_type="multipart/form-data"
    )
    assert "995 added" in uploaded.get_data(as_text=True)
    assert api.get("/segments/BULK_DASH").json["member_count"] == 1000
    bad = htmx("/segments/BULK_DASH/members", {"user_ids": "7, x9, -3"})
    assert bad.status_code == 422 and "x9" in bad.get_data(as_text=True)
    assert "995 added" in uploaded.get_data(as_text=True) and "read as a column header" in uploaded.get_data(
        as_text=True
    )


def test_user_page_add_remove_and_exclusion(htmx, api, client):
    make(api, "USER_DASH")
    lower = htmx("/users/77/segments", {"slug": "user_dash", "ttl_seconds": "3600"})
    assert lower.status_code == 422 and 'name="use_slug" value="USER_DASH">Use USER_DASH<' in lower.get_data(
        as_text=True
    )
    added = htmx("/users/77/segments", {"slug": "user_dash", "use_slug": "USER_DASH", "ttl_seconds": "3600"})
    assert added.status_code == 200 and "Added to USER_DASH." in added.get_data(as_text=True)
    assert api.active(77)[0]["expires_at"] is not None
    unknown = htmx("/users/77/segments", {"slug": "NOT_THERE"})
    assert unknown.status_code == 422 and "There is no segment called NOT_THERE." in unknown.get_data(
        as_text=True
    )
    removed = htmx("/users/77/segments", {"remove": "USER_DASH"})
    assert "Removed from USER_DASH." in removed.get_data(as_text=True)
    assert api.active(77) == []
    history = client.get("/users/77").get_data(as_text=True)
    assert history.count("dashboard") >= 2


def test_settings_and_rollout_preview(htmx, client, api, db_session):
    make(api, "ROLL_DASH")
    from webapp.models import Segment

    salt = db_session.query(Segment).filter_by(slug="ROLL_DASH").one().salt
    preview = client.get("/segments/ROLL_DASH/rollout-preview?rollout_percent=25").get_data(as_text=True)
    covered = sum(1 for user in range(1, 10_001) if rollout.bucket(salt, user) < 2500)  # one user at a time
    assert f"{covered:,} of user ids" in preview
    assert "two decimal" in client.get("/segments/ROLL_DASH/rollout-preview?rollout_percent=1.234").get_data(
        as_text=True
    )
    saved = htmx("/segments/ROLL_DASH/settings", {"description": "new words", "rollout_percent": "25"})
    assert saved.status_code == 200 and api.get("/segments/ROLL_DASH").json["rollout_percent"] == 25
    bad = htmx("/segments/ROLL_DASH/settings", {"description": "x", "rollout_percent": "101"})
    assert bad.status_code == 422 and "field-error" in bad.get_data(as_text=True)


def test_delete_needs_the_slug_typed(client, csrf, api):
    make(api, "DEL_DASH")
    api.change(1, ["DEL_DASH"])
    wrong = client.post("/segments/DEL_DASH/delete", data={"csrf_token": csrf, "confirm": "nope"})
    assert wrong.status_code == 422
    done = client.post(
        "/segments/DEL_DASH/delete", data={"csrf_token": csrf, "confirm": "DEL_DASH"}, follow_redirects=True
    )
    assert "Segment DEL_DASH deleted; 1 member left it." in done.get_data(as_text=True)


def test_member_filter_and_remove(htmx, client, api):
    make(api, "MEMBERS_DASH")
    api.post("/segments/MEMBERS_DASH/members", {"user_ids": list(range(1, 60))})
    page = client.get("/segments/MEMBERS_DASH/members?after=25", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert ">26<" in page and ">25<" not in page
    found = client.get("/segments/MEMBERS_DASH/members?user_id=33", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert ">33<" in found and ">34<" not in found
    removed = htmx("/segments/MEMBERS_DASH/members/33/remove")
    assert "User 33 removed from MEMBERS_DASH." in removed.get_data(as_text=True)


def test_reports_page_request_and_status(htmx, client, api):
    response = htmx("/reports", {"kind": "all_history", "period": "2020-01"})
    assert response.status_code == 200 and "Report queued" in response.get_data(as_text=True)
    bad = htmx("/reports", {"kind": "user_history", "period": "2020-01"})
    assert bad.status_code == 422 and "Enter the user&#39;s id." in bad.get_data(as_text=True)


def test_slug_autocomplete(client, api):
    make(api, "AUTO_ONE", description="first")
    make(api, "OTHER_TWO")
    html = client.get("/fragments/slugs?slug=auto").get_data(as_text=True)
    assert '<option value="AUTO_ONE">' in html and "OTHER_TWO" not in html


def test_a_rule_segment_s_reach_counts_its_rule_members_not_a_share_of_all_users(client, api, db_session):
    """A segment answering by its rules reaches the users its rules match and its percentage
    takes (its rule rows), never "x% of all users"; the segment list says the same."""
    from tests.services.test_rule_segments import run_operations

    rules = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]
    for user, plan in {1: "paid", 2: "paid", 3: "free"}.items():
        assert api.put(f"/users/{user}/traits", {"traits": {"plan": plan}}).status_code == 200
    assert api.post("/segments", {"slug": "REACH_RULES", "rules": rules}).status_code == 201
    run_operations(db_session)
    api.change(9, ["REACH_RULES"])  # and one explicit member
    said = "2 through rules (100% of the users they match) + 1 explicit"
    page = client.get("/segments/REACH_RULES").get_data(as_text=True)
    assert page.split("data-reach>", 1)[1].split("</p>", 1)[0] == said
    row = client.get("/").get_data(as_text=True).split("REACH_RULES", 1)[1].split("</tr>", 1)[0]
    assert said in row and "of all users" not in row and "known users" not in row


def test_the_user_page_says_which_rule_put_the_user_in(client, api, db_session):
    """Issue 29: "rule 2: country in [RU, BY] and plan = paid" beside a rule member's badge;
    the percentage when it takes less than everyone the rules match."""
    from tests.services.test_rule_segments import run_operations
    from webapp.services.traits.users import why_by_rules

    rules = [
        {"conditions": [{"trait": "plan", "operator": "str_eq", "value": "trial"}]},
        {
            "conditions": [
                {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                {"trait": "plan", "operator": "str_eq", "value": "paid"},
            ]
        },
    ]
    traits = {"country": "BY", "plan": "paid"}
    assert api.put("/users/5/traits", {"traits": traits}).status_code == 200
    assert api.post("/segments", {"slug": "WHY_RULES", "rules": rules}).status_code == 201
    assert (
        api.post("/segments", {"slug": "WHY_TENTH", "rules": rules, "rollout_percent": 10}).status_code == 201
    )
    run_operations(db_session)
    page = client.get("/users/5").get_data(as_text=True)
    row = page.split('href="/segments/WHY_RULES"', 1)[1].split("</tr>", 1)[0]
    assert "rule 2: country in [RU, BY] and plan = paid" in row and "rollout" not in row
    assert why_by_rules(db_session, ["WHY_TENTH"], traits) == {
        "WHY_TENTH": "rule 2: country in [RU, BY] and plan = paid; in the 10% rollout"
    }
    # the rules changed, not yet re-evaluated: the row says the membership is from before
    changed = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "trial"}]}]
    assert api.patch("/segments/WHY_RULES", {"rules": changed}).status_code == 200
    row = client.get("/users/5").get_data(as_text=True).split('href="/segments/WHY_RULES"', 1)[1]
    assert "an earlier evaluation of its rules" in row.split("</tr>", 1)[0]


def test_the_user_history_says_which_trait_or_rule_change_moved_the_user(client, api, db_session):
    """Issue 29, item 4: a rule entry in the user page's history names its cause in words: the
    trait keys that changed (linking to the user's traits), or the segment's rules changed
    (linking to its activity), each with its actor and instant."""
    from tests.services.test_rule_segments import run_operations

    paid = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]
    assert api.put("/users/6/traits", {"traits": {"plan": "free"}}).status_code == 200
    assert api.post("/segments", {"slug": "WHY_CAUSE", "rules": paid}).status_code == 201
    run_operations(db_session)
    assert (
        api.patch("/users/6/traits", {"traits": {"plan": "paid"}}, headers={"X-Actor": "crm"}).status_code
        == 200
    )
    gold = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "gold"}]}]
    assert api.patch("/segments/WHY_CAUSE", {"rules": gold}, headers={"X-Actor": "alice"}).status_code == 200
    run_operations(db_session)
    page = html.unescape(client.get("/users/6").get_data(as_text=True))
    links = re.findall(
        r'(rule · )?<a class="cause" data-cause="(\w+)" href="([^"]+)">([^<]+)</a> by ([^<]+?) at ', page
    )
    assert links == [
        (
            "rule · ",
            "rules_changed",
            "/segments/WHY_CAUSE#segment-activity",
            "WHY_CAUSE's rules changed",
            "api (X-Actor: alice)",
        ),
        ("rule · ", "traits", "/users/6#user-traits", "traits plan changed", "api (X-Actor: crm)"),
    ]
