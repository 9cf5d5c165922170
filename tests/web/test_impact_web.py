"""Impact before change and true limits on the segment page (issue 24, items 1 and 2), through
the Flask test client: the live preview knows the group, the save asks to confirm when anyone
leaves, and a confirmation against a newer catalog shows the new numbers instead of saving."""

from __future__ import annotations

import re

from webapp.platform.extensions import db
from webapp.services import impact


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def two_in_a_group(api):
    api.segment("DISC_A", rollout_percent=10, exclusion_group="DISCOUNTS")
    api.segment("DISC_B", rollout_percent=10, exclusion_group="DISCOUNTS")


def test_the_live_preview_states_the_true_ceiling(api, client):
    """Two segments at 10% in one group: 95 is refused with "at most 90%" (before: 80%, and the
    preview showed 9,041 of 10,000), 85 and 90 fit, and at 90 the ceiling is still 90%."""
    two_in_a_group(api)
    at_95 = text(client.get("/segments/DISC_A/rollout-preview?rollout_percent=95").get_data(as_text=True))
    assert (
        "at most 90% for this segment (it holds 10%, 80% is free); its" in at_95
        and "of user ids" not in at_95
    )
    for fits in ("85", "90"):
        shown = text(
            client.get(f"/segments/DISC_A/rollout-preview?rollout_percent={fits}").get_data(as_text=True)
        )
        assert "at most 90% for this segment" in shown and "To go higher" not in shown, shown
        assert "of user ids 1–10,000 fall in" in shown
    assert api.patch("/segments/DISC_A", {"rollout_percent": 90}).status_code == 200
    over = text(client.get("/segments/DISC_A/rollout-preview?rollout_percent=90.01").get_data(as_text=True))
    assert "at most 90% for this segment (it holds 90%, 0% is free); its" in over and "at most 0%" not in over
    # a group the segment would join offers its free space only
    api.segment("LONE", rollout_percent=10)
    joining = text(
        client.get("/segments/LONE/rollout-preview?rollout_percent=10&exclusion_group=DISCOUNTS").get_data(
            as_text=True
        )
    )
    assert "Group DISCOUNTS is full: no room is free for this segment" in joining


def test_the_ceiling_the_api_states_is_right(api):
    """The API's group_full names this segment's ceiling, at 10% and at 90%."""
    two_in_a_group(api)
    refused = api.patch("/segments/DISC_A", {"rollout_percent": 95})
    assert refused.status_code == 422
    [item] = refused.json["error"]["details"]
    assert (item["code"], item["max_percent"], item["free_percent"]) == ("group_full", 90, 80)
    assert api.patch("/segments/DISC_A", {"rollout_percent": 85}).status_code == 200
    assert api.patch("/segments/DISC_A", {"rollout_percent": 90}).status_code == 200
    [item] = api.patch("/segments/DISC_A", {"rollout_percent": 90.01}).json["error"]["details"]
    assert (item["max_percent"], item["free_percent"]) == (90, 0)
    assert "at most 90%" in item["message"]


def test_a_group_join_asks_to_confirm_with_the_numbers(api, client, htmx, db_session):
    api.segment("JOINING", rollout_percent=10)
    api.segment("HOLDER", rollout_percent=20, exclusion_group="DISCOUNTS")
    api.segment("KNOWN")  # its members are known users
    assert api.post("/segments/KNOWN/members", {"user_ids": list(range(1, 5001))}).status_code == 200
    assert api.post("/segments/JOINING/members", {"user_ids": list(range(1, 3001, 3))}).status_code == 200
    form = {"description": "", "rollout_percent": "10", "exclusion_group": "DISCOUNTS"}
    asked = htmx("/segments/JOINING/settings", form)
    shown = text(asked.get_data(as_text=True))
    expected = impact.preview_update(db.session, "JOINING", exclusion_group="DISCOUNTS")
    assert expected.own.leaving > 0
    assert f"{expected.own.leaving:,} will leave, {expected.own.joining:,} will join JOINING" in shown
    assert api.get("/segments/JOINING").json["exclusion_group"] is None  # nothing saved yet
    version = re.search(r'name="catalog_version" value="(\d+)"', asked.get_data(as_text=True))[1]
    api.segment("SOMETHING_ELSE")  # the catalog moves on: the confirmation shows new numbers
    again = htmx("/segments/JOINING/settings", {**form, "confirmed": "1", "catalog_version": version})
    assert "The segments changed since the last numbers" in text(again.get_data(as_text=True))
    assert api.get("/segments/JOINING").json["exclusion_group"] is None
    version = re.search(r'name="catalog_version" value="(\d+)"', again.get_data(as_text=True))[1]
    saved = htmx("/segments/JOINING/settings", {**form, "confirmed": "1", "catalog_version": version})
    assert saved.status_code == 200 and "JOINING saved." in saved.get_data(as_text=True)
    assert api.get("/segments/JOINING").json["exclusion_group"] == "DISCOUNTS"


def test_a_raise_that_moves_nobody_out_saves_at_once(api, htmx):
    api.segment("RAISING", rollout_percent=10)
    assert api.post("/segments/RAISING/members", {"user_ids": [1, 2, 3]}).status_code == 200
    saved = htmx("/segments/RAISING/settings", {"description": "", "rollout_percent": "20"})
    assert "RAISING saved." in saved.get_data(as_text=True)


def test_the_api_previews_what_the_change_then_does(api):
    api.segment("API_IMPACT", rollout_percent=30)
    api.segment("ELSEWHERE")  # its members are known users the rollout covers
    assert api.post("/segments/ELSEWHERE/members", {"user_ids": list(range(1, 700))}).status_code == 200
    assert api.post("/segments/API_IMPACT/members", {"user_ids": list(range(1, 100))}).status_code == 200
    preview = api.post("/segments/API_IMPACT/impact", {"change": "update", "rollout_percent": 10})
    assert preview.status_code == 200, preview.json
    body = preview.json
    assert body["change"] == "update" and body["moves"][0]["slug"] == "API_IMPACT"
    assert body["leaving"] > 0 and body["joining"] == 0 and body["known_users"] == 699
    stale = api.patch(
        f"/segments/API_IMPACT?catalog_version={body['catalog_version'] - 1}", {"rollout_percent": 10}
    )
    assert stale.status_code == 409 and stale.json["error"]["details"][0]["code"] == "impact_changed"
    ok = api.patch(f"/segments/API_IMPACT?catalog_version={body['catalog_version']}", {"rollout_percent": 10})
    assert ok.status_code == 200
    for change in (
        {"change": "delete"},
        {"change": "remove", "user_ids": [1, 2, 3]},
        {"change": "replace", "user_ids": [1, 2, 3]},
        {"change": "schedule", "at": "2099-01-01T00:00:00Z", "rollout_percent": 50},
    ):
        answer = api.post("/segments/API_IMPACT/impact", change)
        assert answer.status_code in (200, 422), answer.json
    assert api.post("/segments/API_IMPACT/impact", {"change": "delete"}).json["leaving"] > 0
    assert api.post("/segments/API_IMPACT/impact", {"change": "remove"}).status_code == 422
    assert (
        api.post("/segments/API_IMPACT/impact", {"change": "update", "rollout_percent": 101}).status_code
        == 422
    )
