"""The settings form's rollout preview describes exactly what is in the fields — percentage AND
exclusion group — while typing, after a save that asks to confirm and after a refused save
(issue 24 follow-up, walkthrough items 1–4); Recent changes does not claim nothing changed after
rollout moves (item 7); bulk wording in the singular and "add the others" saying who is new
(item 8). Through the Flask test client.

The counts are checked against a second computation: every user id of the sample (1–10,000) is
made a *known* user (an explicit member of an unrelated segment), so a segment at 0% with no
members of its own that would get a rollout has exactly as many "would join" (services.impact:
NumPy over the group's hash space) as the preview's "N of user ids 1–10,000 fall in"
(rollout_state.preview_share: one rule evaluated per id)."""

from __future__ import annotations

import re

from webapp.web import messages

SAMPLE_IDS = list(range(1, 10_001))


def words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def preview_of(html: str) -> str:
    """The rollout preview's words (limits, sample, impact) in a whole form or page."""
    found = re.search(r'id="rollout-preview"[^>]*>(.*?)</p>', html, re.S)
    assert found, html[:400]
    return words(found.group(1))


def fall_in(preview: str) -> int | None:
    found = re.search(r"([\d,]+) of user ids 1–10,000 fall in", preview)
    return int(found.group(1).replace(",", "")) if found else None


def would_join(preview: str, slug: str) -> int:
    found = re.search(rf"([\d,]+) would join {slug}", preview)
    assert found, preview
    return int(found.group(1).replace(",", ""))


def live(client, slug: str, percent: str, group: str | None = None) -> str:
    query = {"rollout_percent": percent}
    if group is not None:
        query["exclusion_group"] = group
    response = client.get(f"/segments/{slug}/rollout-preview", query_string=query)
    assert response.status_code == 200
    return words(response.get_data(as_text=True))


def settings(htmx, slug: str, percent: str, group: str = "", description: str = "", **extra):
    form = {"description": description, "rollout_percent": percent, "exclusion_group": group, **extra}
    return htmx(f"/segments/{slug}/settings", form)


def known_sample(api) -> None:
    api.segment("KNOWN")
    assert api.post("/segments/KNOWN/members", {"user_ids": SAMPLE_IDS}).status_code in (200, 202)


def test_typed_percent_and_group_are_previewed_live_with_a_count(client, api):
    """Item 1: 10/20/30% with a group typed shows the count in that group's hash space (it was
    "No automatic rollout: only explicit members."), the same number the impact says will join."""
    known_sample(api)
    api.segment("DISC_A", rollout_percent=30, exclusion_group="DISCOUNTS")
    api.segment("NEW")
    for percent in ("10", "20", "30"):
        grouped = live(client, "NEW", percent, "DISCOUNTS")
        assert "No automatic rollout" not in grouped, grouped
        assert "Group DISCOUNTS: at most 70% for this segment (70% is free; DISC_A 30%)" in grouped
        count = fall_in(grouped)
        assert count is not None and abs(count - int(percent) * 100) < 300, grouped
        assert count == would_join(grouped, "NEW"), grouped
        alone = live(client, "NEW", percent, "")
        assert fall_in(alone) == would_join(alone, "NEW") and "Group" not in alone
    # a group nobody has yet: its own (future) hash space, the whole of it free
    fresh = live(client, "NEW", "20", "BRAND_NEW")
    assert "Group BRAND_NEW: at most 100% for this segment (100% is free)" in fresh
    assert fall_in(fresh) == would_join(fresh, "NEW")
    # 0% in a group: no rollout, said as such
    assert "No automatic rollout: only explicit members." in live(client, "NEW", "0", "DISCOUNTS")


def test_a_confirmation_previews_the_typed_values_not_the_saved_ones(client, htmx, api):
    """Item 2: saved 30%, typed 20 → the confirmation's preview is the 20% count; typed group
    DISCOUNTS → the count in DISCOUNTS and the group's limit line stay."""
    known_sample(api)
    api.segment("DISC_A", rollout_percent=30, exclusion_group="DISCOUNTS")
    api.segment("SEG", rollout_percent=30)
    saved_30 = fall_in(preview_of(client.get("/segments/SEG").get_data(as_text=True)))
    at_20 = fall_in(live(client, "SEG", "20", ""))
    asked = settings(htmx, "SEG", "20")
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and 'id="impact-confirm"' in html  # users leave: confirm first
    assert fall_in(preview_of(html)) == at_20 != saved_30
    assert "would leave" not in preview_of(html)  # the numbers are said once, in the confirmation
    typed_group = live(client, "SEG", "20", "DISCOUNTS")
    asked = settings(htmx, "SEG", "20", "DISCOUNTS").get_data(as_text=True)
    assert 'id="impact-confirm"' in asked
    preview = preview_of(asked)
    assert "Group DISCOUNTS: at most 70% for this segment (70% is free; DISC_A 30%)" in preview
    assert fall_in(preview) == fall_in(typed_group) and fall_in(preview) != at_20
    # the confirmed save keeps the same count on the saved form
    version = re.search(r'name="catalog_version" value="(\d+)"', asked).group(1)
    key = re.search(r'name="confirmed_values" value="([^"]*)"', asked).group(1)
    done = settings(
        htmx, "SEG", "20", "DISCOUNTS", confirmed="1", catalog_version=version, confirmed_values=key
    )
    assert done.status_code == 200 and 'id="impact-confirm"' not in done.get_data(as_text=True)
    assert fall_in(preview_of(done.get_data(as_text=True))) == fall_in(typed_group)
    assert api.get("/segments/SEG").json["exclusion_group"] == "DISCOUNTS"


def test_a_confirm_sent_with_other_values_asks_again_with_their_numbers(htmx, api):
    """Typing another value after the numbers were shown, then Confirm: nothing is saved, the
    numbers of the values now in the fields are shown to confirm."""
    known_sample(api)
    api.segment("SEG", rollout_percent=30)
    asked = settings(htmx, "SEG", "20").get_data(as_text=True)
    version = re.search(r'name="catalog_version" value="(\d+)"', asked).group(1)
    again = settings(htmx, "SEG", "5", confirmed="1", catalog_version=version, confirmed_values="20|")
    html = again.get_data(as_text=True)
    assert again.status_code == 200 and 'id="impact-confirm"' in html
    assert 'name="confirmed_values" value="5|"' in html
    assert api.get("/segments/SEG").json["rollout_percent"] == 30


def test_a_refused_save_never_previews_another_value(client, htmx, api):
    """Item 3: max 80%, typed 85 → the field's problem once and no count (it showed the 80%
    count); a refusal for another field previews the typed percentage and group."""
    api.segment("DISC_A", rollout_percent=20, exclusion_group="DISCOUNTS")
    api.segment("DISC_B", rollout_percent=30, exclusion_group="DISCOUNTS")
    refused = settings(htmx, "DISC_B", "85", "DISCOUNTS")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422
    problem = "Group DISCOUNTS: at most 80% for this segment (it holds 30%, 50% is free)"
    assert words(html).count(problem) == 1
    preview = preview_of(html)
    assert "of user ids" not in preview and "No automatic rollout" not in preview
    # a description too long: the preview is the typed 40% in DISCOUNTS, not the saved 30%
    long = settings(htmx, "DISC_B", "40", "DISCOUNTS", description="x" * 2001)
    assert long.status_code == 422
    assert fall_in(preview_of(long.get_data(as_text=True))) == fall_in(live(client, "DISC_B", "40"))
    assert fall_in(live(client, "DISC_B", "40")) != fall_in(live(client, "DISC_B", "30"))
    assert api.get("/segments/DISC_B").json["rollout_percent"] == 30


def test_the_limit_message_numbers_agree():
    """Item 4: the ceiling is what the segment holds plus what is free, said with both."""

    def full(ceiling, free):
        return messages.words(
            {
                "field": "rollout_percent",
                "code": "group_full",
                "exclusion_group": "DISCOUNTS",
                "max_percent": ceiling,
                "free_percent": free,
                "message": "ignored",
            }
        )

    assert full(80, 50).startswith(
        "Group DISCOUNTS: at most 80% for this segment (it holds 30%, 50% is free)"
    )
    assert full(12.5, 12.5).startswith("Group DISCOUNTS: at most 12.5% for this segment (12.5% is free)")
    assert "has only" not in full(80, 50) and "at most 0%" not in full(0, 0)
    assert full(0, 0).startswith("Group DISCOUNTS is full")


def test_recent_changes_names_the_rollout_moves(client, api):
    """Item 7: after rollout and group changes, Recent changes does not say "No membership
    changes yet": it names the changes that moved users, linked to their Activity entries."""
    api.segment("MOVED")
    assert "No membership changes yet." in client.get("/segments/MOVED/recent").get_data(as_text=True)
    assert api.patch("/segments/MOVED", {"rollout_percent": 10}).status_code == 200
    assert api.patch("/segments/MOVED", {"exclusion_group": "MOVES"}).status_code == 200
    recent = client.get("/segments/MOVED/recent").get_data(as_text=True)
    assert "No membership changes yet" not in recent
    assert "No per-user changes yet" in words(recent)
    links = re.findall(r'href="#(activity-\d+)">([^<]+)</a>', recent)
    assert [text for _, text in links] == ["Moved into group MOVES", "Rollout changed from 0% to 10%"]
    page = client.get("/segments/MOVED").get_data(as_text=True)
    for anchor, _ in links:
        assert f'id="{anchor}"' in page  # each link lands on its Activity row


def test_bulk_wording_counts_in_the_singular_and_says_who_is_new(client, htmx, api):
    """Item 8: "1 id received", "Bulk import of 1 id"; "Add the other 9 (8 are members already)"."""
    api.segment("ONE")
    added = htmx("/segments/ONE/members", {"user_ids": "7"}, content_type="multipart/form-data")
    html = words(added.get_data(as_text=True))
    assert "(1 id received)" in html and "1 ids" not in html
    activity = words(client.get("/segments/ONE/activity").get_data(as_text=True))
    assert "Bulk import of 1 id" in activity and "1 ids" not in activity
    api.segment("G_A", exclusion_group="OTHERS")
    api.segment("G_B", exclusion_group="OTHERS")
    assert api.post("/segments/G_A/members", {"user_ids": list(range(1, 9))}).status_code == 200
    assert api.change(100, add=["G_B"]).status_code == 200
    listed = " ".join(str(u) for u in [*range(1, 10), 100])
    refused = htmx("/segments/G_A/members", {"user_ids": listed}, content_type="multipart/form-data")
    assert refused.status_code == 422
    offers = words(refused.get_data(as_text=True))
    assert "Add the other 9 (8 are members already)" in offers
    assert "The other 9 can be added without them (1 new: 8 are members already)" in offers
