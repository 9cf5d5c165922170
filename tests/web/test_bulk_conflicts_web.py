"""Issue 24 items 3, 4 and 7 through the Flask test client: a bulk add refused for conflicts in an
exclusion group says how many, with which segments, a sample, under the field the ids came from,
offers their download and the add of the others; the rollout preview follows the field after a
refused save; a taken slug links to its segment; an empty segment's chart axis."""

from __future__ import annotations

import io
import re


def bulk(htmx, slug, files=None, **form):
    data = dict(form)
    if files:
        data["file"] = (io.BytesIO(files[1].encode()), files[0])
    return htmx(f"/segments/{slug}/members", data, content_type="multipart/form-data")


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def error_of(html: str, field: str) -> str:
    found = re.search(rf'<div class="field-error" role="alert" id="{field}-error">(.*?)</div>', html, re.S)
    return text(found.group(1)) if found else ""


def grouped(api, explicit=(1001, 1002, 1003)):
    """CONF_A and CONF_B in group CONF; the ``explicit`` users are in CONF_B."""
    api.segment("CONF_A", exclusion_group="CONF")
    api.segment("CONF_B", exclusion_group="CONF")
    for user in explicit:
        assert api.change(user, add=["CONF_B"]).status_code == 200


def test_a_conflicting_file_is_refused_under_the_file_with_count_sample_and_offers(htmx, api):
    grouped(api)
    answer = bulk(htmx, "CONF_A", files=("people.csv", "user_id\n1001\n1002\n1003\n5\n6\n"))
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert error_of(html, "user_ids") == ""  # not under the (empty) paste box
    under_file = error_of(html, "file")
    assert "Nothing was added: 3 of the 5 ids in people.csv are already in CONF_B" in under_file
    assert "exclusion group CONF" in under_file and "1001, 1002, 1003" in under_file
    offers = text(html[html.index('id="bulk-conflicts"') :])
    assert "Download the 3 (CSV)" in offers and "Add the other 2" in offers
    assert html.index('id="file-error"') < html.index('id="bulk-conflicts"')
    assert 'hx-preserve="true"' in html  # the chosen file stays chosen
    assert "people.csv is still chosen" in html and "Choose people.csv again" not in html
    assert api.get("/segments/CONF_A").json["member_count"] == 0


def test_pasted_conflicts_sit_under_the_paste_box_and_a_long_list_is_sampled(htmx, api):
    grouped(api, explicit=range(2001, 2016))
    html = bulk(htmx, "CONF_A", user_ids=" ".join(str(u) for u in range(2001, 2021))).get_data(as_text=True)
    under_paste = error_of(html, "user_ids")
    assert "15 of the 20 pasted ids are already in CONF_B" in under_paste
    assert "2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2010, …" in under_paste
    assert "2011" not in under_paste
    assert error_of(html, "file") == ""
    assert "Add the other 5" in text(html)


def test_add_the_others_skips_the_conflicts_and_says_so(htmx, api):
    grouped(api)
    answer = bulk(
        htmx, "CONF_A", files=("people.csv", "1001\n1002\n5\n6\n7\n"), user_ids="8 1003", skip_conflicts="yes"
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    html = answer.get_data(as_text=True)
    assert "4 added, 0 expiry updated, 0 already members (7 ids received" in html
    assert "3 skipped: already in another segment of exclusion group CONF." in html
    assert 'hx-preserve="true"' not in html  # after an add the file field is empty again
    members = [m["user_id"] for m in api.get("/segments/CONF_A/members").json["items"]]
    assert members == [5, 6, 7, 8]
    activity = api.get("/segments/CONF_A/activity").json["items"][0]
    assert activity["detail"]["skipped"] == 3 and activity["detail"]["skipped_in"] == {"CONF_B": 3}


def test_the_conflicting_ids_download_as_csv(htmx, api):
    grouped(api)
    answer = htmx(
        "/segments/CONF_A/members/conflicts.csv",
        {"user_ids": "1003 9", "file": (io.BytesIO(b"1001\n5\n"), "people.csv")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert 'filename="conflicts-CONF_A.csv"' in answer.headers["Content-Disposition"]
    assert answer.get_data(as_text=True) == "user_id,segment\n1001,CONF_B\n1003,CONF_B\n"


def test_a_file_with_problems_is_not_kept(htmx, api):
    grouped(api)
    html = bulk(htmx, "CONF_A", files=("bad.csv", "1\nabc\n")).get_data(as_text=True)
    assert 'hx-preserve="true"' not in html and "Choose bad.csv again" in html


def test_a_large_background_add_shows_its_skipped_count(htmx, api):
    grouped(api)
    listed = "\n".join(str(u) for u in range(1, 10_011)) + "\n1001\n"
    html = bulk(htmx, "CONF_A", files=("many.txt", listed), skip_conflicts="yes").get_data(as_text=True)
    assert "Adding 10,007 ids in the background: progress below. 3 skipped" in html
    # the poll inside the form inherits neither the form's indicator nor its disabled elements
    assert 'hx-disinherit="hx-indicator hx-disabled-elt"' in html


def preview_text(html: str) -> str:
    """The rollout preview's words (the group's limits, the sample, the impact), tags dropped."""
    inner = re.search(r'id="rollout-preview"[^>]*>(.*?)</p>', html, re.S).group(1)
    return " ".join(re.sub(r"<[^>]+>", " ", inner).split())


def sampled(preview: str) -> int:
    """How many of the sampled user ids the preview says fall in."""
    return int(re.search(r"([\d,]+) of user ids", preview).group(1).replace(",", ""))


def test_the_preview_follows_the_field_after_a_refused_save(htmx, api):
    api.segment("FULL_A", exclusion_group="FULL", rollout_percent=50)
    api.segment("FULL_B", exclusion_group="FULL", rollout_percent=10)
    saved = htmx(
        "/segments/FULL_B/settings", {"description": "", "rollout_percent": "10", "exclusion_group": "FULL"}
    )
    assert saved.status_code == 200
    at_ten = preview_text(saved.get_data(as_text=True))
    refused = htmx(
        "/segments/FULL_B/settings", {"description": "", "rollout_percent": "60", "exclusion_group": "FULL"}
    )
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and 'id="rollout_percent-error"' in html
    preview = preview_text(html)
    assert preview != at_ten  # not the saved 10%
    # nor the count of the most that fits (50%): 60 is refused, said once under the field
    assert "of user ids" not in preview and html.count("at most 50% for this segment") == 1
    typo = htmx(
        "/segments/FULL_B/settings", {"description": "", "rollout_percent": "abc", "exclusion_group": "FULL"}
    ).get_data(as_text=True)
    assert typo.count("Enter a percentage from 0 to 100.") == 1  # under the field, not again in the preview
    assert re.search(r'id="rollout-preview"[^>]*>\s*</p>', typo)


def test_a_taken_slug_links_to_its_segment(htmx, api):
    api.segment("TAKEN_ONE")
    html = htmx("/segments", {"slug": "TAKEN_ONE"}).get_data(as_text=True)
    assert "A segment called TAKEN_ONE already exists" in error_of(html, "slug")
    assert '<a class="offer" href="/segments/TAKEN_ONE">Open TAKEN_ONE</a>' in html


def test_an_empty_segments_chart_labels_its_axis_once(client, api):
    api.segment("EMPTY_AXIS")
    html = client.get("/segments/EMPTY_AXIS").get_data(as_text=True)
    ticks = re.findall(r'class="tick members-tick">([^<]*)<', html)
    assert ticks == ["0"]
    api.post("/segments/EMPTY_AXIS/members", {"user_ids": [1]})
    html = client.get("/segments/EMPTY_AXIS").get_data(as_text=True)
    assert re.findall(r'class="tick members-tick">([^<]*)<', html) == ["0", "1"]
