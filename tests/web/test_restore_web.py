"""The deleted segment's page and its Restore button, and history entries that say which change
caused them (issue 24, item 7), through the Flask test client."""

from __future__ import annotations

import re

from tests.support.checks import NOT_PLAIN, messages


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_deleted_segments_page_says_when_and_who_and_restores_it(client, api, csrf):
    api.segment("GONE", rollout_percent=20, description="old test")
    api.post("/segments/GONE/members", {"user_ids": [1, 2, 3]})
    deleted = client.post("/segments/GONE/delete", data={"confirm": "GONE", "csrf_token": csrf})
    assert deleted.status_code == 302
    page = client.get("/segments/GONE")
    assert page.status_code == 200
    shown = text(page.get_data(as_text=True))
    assert "GONE deleted" in shown and re.search(
        r"Deleted \d{4}-\d\d-\d\d \d\d:\d\d UTC by dashboard", shown
    ), shown[:600]
    assert "Explicit members kept 3" in shown and "Rollout when deleted 20%" in shown
    assert "Deleted with 3 explicit members and a 20% rollout" in shown  # its activity
    assert "Restore GONE" in shown
    restored = client.post("/segments/GONE/restore", data={"csrf_token": csrf})
    assert restored.status_code == 302 and restored.headers["Location"].endswith("/segments/GONE")
    after = client.get("/segments/GONE").get_data(as_text=True)
    said = " ".join(messages(after))
    assert "Segment GONE restored: 3 members are back, with its 20% rollout." in said
    assert not NOT_PLAIN.search(said)
    assert {m["user_id"] for m in api.get("/segments/GONE/members").json["items"]} == {1, 2, 3}
    # a second click (the same form posted again) says it is back, no error page
    again = client.post("/segments/GONE/restore", data={"csrf_token": csrf})
    assert again.status_code == 302 and again.headers["Location"].endswith("/segments/GONE")
    assert "has been restored already" in " ".join(
        messages(client.get("/segments/GONE").get_data(as_text=True))
    )


def test_a_taken_slug_is_named_with_a_link_and_restore_is_refused_in_words(client, api, csrf):
    api.segment("TWICE")
    api.delete("/segments/TWICE")
    api.segment("TWICE", description="the new one")
    assert "the new one" in client.get("/segments/TWICE").get_data(as_text=True)  # the live one wins
    page = client.get("/segments/TWICE/deleted").get_data(as_text=True)
    assert 'A newer segment called <a href="/segments/TWICE">TWICE</a>' in page
    assert "Restore TWICE" not in page
    refused = client.post("/segments/TWICE/restore", data={"csrf_token": csrf})
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/segments/TWICE/deleted")
    again = client.get("/segments/TWICE/deleted").get_data(as_text=True)
    said = messages(again)  # said once, in the Restore card (not a flash as well)
    assert len(said) == 1 and "A newer segment called TWICE was created" in text(said[0])
    assert text(again).count("A newer segment called TWICE was created") == 1 and not NOT_PLAIN.search(
        said[0]
    )


def test_a_full_group_restore_says_it_came_back_at_zero(client, api, csrf):
    api.segment("Z_ONE", exclusion_group="ZG", rollout_percent=40)
    api.segment("Z_TWO", exclusion_group="ZG", rollout_percent=50)
    api.delete("/segments/Z_ONE")
    api.patch("/segments/Z_TWO", {"rollout_percent": 90})
    client.post("/segments/Z_ONE/restore", data={"csrf_token": csrf})
    said = " ".join(messages(client.get("/segments/Z_ONE").get_data(as_text=True)))
    assert "Its rollout is 0%: group ZG has no room for its 40% now." in said


def test_never_deleted_is_still_a_not_found_page(client):
    assert client.get("/segments/NEVER_WAS").status_code == 404
    assert client.get("/segments/NEVER_WAS/deleted").status_code == 404


def test_history_entries_link_to_the_change_that_caused_them(client, api, csrf):
    api.segment("CAUSE")
    api.segment("SIB", exclusion_group="CG", rollout_percent=100)
    api.patch("/segments/CAUSE", {"rollout_percent": 100}, headers={"X-Actor": "pm@example.com"})
    api.patch("/segments/CAUSE", {"exclusion_group": "CG"})  # no room: refused (422), nothing moves
    api.patch("/segments/SIB", {"rollout_percent": 0})
    page = client.get("/users/4").get_data(as_text=True)
    links = re.findall(
        r'<a class="cause" data-cause="(\w+)" href="([^"]+)">([^<]+)</a> by ([^<]+?) at ', page
    )
    assert (
        "rollout",
        "/segments/CAUSE#segment-activity",
        "rollout 0% → 100%",
        "api (X-Actor: pm@example.com)",
    ) in links
    assert ("rollout", "/segments/SIB#segment-activity", "rollout 100% → 0%", "api") in links
    history = api.get("/users/4/history").json["items"]
    cause = next(e["cause"] for e in history if e["segment"] == "CAUSE")
    assert cause["kind"] == "rollout" and (cause["from_percent"], cause["to_percent"]) == (0, 100)
    assert cause["actor"] == "api (X-Actor: pm@example.com)" and cause["segment"] == "CAUSE"
    api.segment("PLAINC")
    api.change(5, add=["PLAINC"])
    plain = next(e for e in api.get("/users/5/history").json["items"] if e["segment"] == "PLAINC")
    assert plain["cause"]["kind"] == "change" and plain["reason"] == "api"
