"""The deleted page's Restore states its impact first (issue 24, items 1 and 7), Back after a
delete finds the deleted segment, a refused delete leaves no POST result behind (htmx), and a
refused restore is said once — through the Flask test client."""

from __future__ import annotations

import re
from collections import Counter

from tests.support.checks import NOT_PLAIN, messages

VERSION_RE = re.compile(r'name="catalog_version" value="(\d+)"')


def text(html: str) -> str:
    return re.sub(r" ([;.,])", r"\1", re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def grouped(api) -> None:
    """RW_30's explicit members held group RW_G; RW_50 raised later covers some of them:
    deleting RW_30 gives them to RW_50, restoring it takes them back."""
    api.segment("RW_50", rollout_percent=0, exclusion_group="RW_G")
    api.segment("RW_30", rollout_percent=20, exclusion_group="RW_G")
    assert api.post("/segments/RW_30/members", {"user_ids": list(range(1, 600, 3))}).status_code == 200
    assert api.patch("/segments/RW_50", {"rollout_percent": 20}).status_code == 200
    assert api.delete("/segments/RW_30").status_code == 200


def moved_at(api, users, at: str) -> Counter:
    counts: Counter = Counter()
    for user in users:
        for item in api.get(f"/users/{user}/history").json["items"]:
            if item["occurred_at"] == at:
                counts[(item["segment"], item["operation"])] += 1
    return counts


def test_a_restore_that_takes_users_from_others_shows_the_numbers_and_asks(client, api, csrf):
    grouped(api)
    preview = api.post("/segments/RW_30/impact", {"change": "restore"}).json
    back, other = preview["moves"][0], preview["moves"][1]
    assert other["slug"] == "RW_50" and other["leaving"] > 0
    page = client.get("/segments/RW_30").get_data(as_text=True)
    shown = text(page)
    assert (
        f"Restoring now: {back['leaving']} will leave, {back['joining']} will join RW_30; "
        f"{other['leaving']} will leave and {other['joining']} join RW_50" in shown
    ), shown
    assert f"Confirm restore: {preview['leaving']} leave, {preview['joining']} join" in shown
    version = VERSION_RE.search(page).group(1)
    # posted without the numbers (an old form, a script): nothing changes, the page asks
    blind = client.post("/segments/RW_30/restore", data={"csrf_token": csrf})
    assert blind.status_code == 302 and blind.headers["Location"].endswith("/segments/RW_30/deleted")
    asked = text(client.get("/segments/RW_30/deleted").get_data(as_text=True))
    assert "This restore takes users out of other segments: confirm the numbers." in asked
    assert api.get("/segments/RW_30").status_code == 404
    # the catalog moves on: the confirmation meets a newer version, nothing changes
    api.segment("RW_ELSE")
    stale = client.post(
        "/segments/RW_30/restore", data={"csrf_token": csrf, "catalog_version": version, "confirmed": "1"}
    )
    assert stale.status_code == 302 and api.get("/segments/RW_30").status_code == 404
    again = client.get("/segments/RW_30/deleted").get_data(as_text=True)
    assert "The segments changed since the last numbers." in text(again)
    assert not messages(again)
    fresh = VERSION_RE.search(again).group(1)
    assert fresh != version
    done = client.post(
        "/segments/RW_30/restore", data={"csrf_token": csrf, "catalog_version": fresh, "confirmed": "1"}
    )
    assert done.status_code == 302 and done.headers["Location"].endswith("/segments/RW_30")
    said = " ".join(messages(client.get("/segments/RW_30").get_data(as_text=True)))
    assert f"{back['joining']} known users joined it; {other['leaving']} left RW_50." in said, said
    assert not NOT_PLAIN.search(said)
    at = api.get("/segments/RW_30/activity").json["items"][0]["occurred_at"]
    counts = moved_at(api, range(1, 600, 3), at)  # the known users: every id ever seen
    assert counts[("RW_30", "added")] == back["joining"] and counts[("RW_50", "removed")] == other["leaving"]
    assert sum(counts.values()) == preview["leaving"] + preview["joining"]


def test_a_restore_nobody_leaves_for_shows_its_joins_on_the_button(client, api, csrf):
    api.segment("RW_ALONE", rollout_percent=0)
    api.post("/segments/RW_ALONE/members", {"user_ids": [4, 5]})
    api.delete("/segments/RW_ALONE")
    shown = text(client.get("/segments/RW_ALONE").get_data(as_text=True))
    assert (
        "Restoring now: 0 will leave, 2 will join RW_ALONE" in shown and "Restore RW_ALONE: 2 join" in shown
    )


def test_back_after_a_delete_finds_the_deleted_segment(client, api, csrf):
    api.segment("RW_BACK")
    assert client.get("/segments/RW_BACK/delete").status_code == 200
    api.delete("/segments/RW_BACK")
    back = client.get("/segments/RW_BACK/delete")
    assert back.status_code == 302 and back.headers["Location"].endswith("/segments/RW_BACK/deleted")
    assert client.get("/segments/NEVER_WAS/delete").status_code == 404
    # the delete posted again (a second click): its deleted page, no error
    twice = client.post("/segments/RW_BACK/delete", data={"csrf_token": csrf, "confirm": "RW_BACK"})
    assert twice.status_code == 302 and twice.headers["Location"].endswith("/segments/RW_BACK/deleted")


def test_a_refused_delete_with_htmx_swaps_the_form_and_a_delete_navigates(htmx, api):
    api.segment("RW_HX")
    wrong = htmx("/segments/RW_HX/delete", {"confirm": "rw_hx"})
    body = wrong.get_data(as_text=True)
    assert wrong.status_code == 422 and body.lstrip().startswith("<form") and "<html" not in body
    assert "Type RW_HX exactly as shown (upper case) to confirm." in text(body)
    assert api.get("/segments/RW_HX").status_code == 200
    version = VERSION_RE.search(body).group(1)
    done = htmx("/segments/RW_HX/delete", {"confirm": "RW_HX", "catalog_version": version})
    assert done.status_code == 204 and done.headers["HX-Redirect"] == "/"
    assert api.get("/segments/RW_HX").status_code == 404


def test_a_restore_its_group_refuses_is_said_once_next_to_the_button(client, api, csrf):
    api.segment("RW_OVER", exclusion_group="RW_OG")
    api.post("/segments/RW_OVER/members", {"user_ids": [7, 8]})
    api.delete("/segments/RW_OVER")
    api.segment("RW_NOW", exclusion_group="RW_OG")
    assert api.post("/segments/RW_NOW/members", {"user_ids": [7]}).status_code == 200
    page = client.get("/segments/RW_OVER").get_data(as_text=True)
    said = messages(page)
    assert len(said) == 1 and "RW_NOW" in said[0] and 'id="restore-refusal"' in page
    assert "Confirm restore" not in page and "Restore RW_OVER" not in page
    refused = client.post("/segments/RW_OVER/restore", data={"csrf_token": csrf})
    assert refused.status_code == 302 and api.get("/segments/RW_OVER").status_code == 404
    again = messages(client.get("/segments/RW_OVER/deleted").get_data(as_text=True))
    assert len(again) == 1 and "RW_NOW" in again[0] and not NOT_PLAIN.search(again[0])
