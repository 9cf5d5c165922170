"""Impact before change on the delete confirmation, the schedule form and the bulk remove /
replace card (issue 24, item 1), through the Flask test client: each shows services.impact's
numbers before saving, carries the catalog version they were computed on, asks to confirm when
anyone leaves, and a save against a newer catalog shows the new numbers instead of saving; for a
deletion and a replace the history then holds exactly the numbers shown."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

from webapp.models.enums import Action
from webapp.platform.extensions import db
from webapp.services import impact
from webapp.services.history import replay as history

VERSION_RE = re.compile(r'name="catalog_version" value="(\d+)"')
FINGERPRINT_RE = re.compile(r'name="fingerprint" value="([0-9a-f]+)"')


def text(html: str) -> str:
    """The page's words: tags out, white space runs as one space, no space before , or ."""
    words = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    return words.replace(" ,", ",").replace(" .", ".").replace(" ;", ";")


def shown(response) -> str:
    return text(response.get_data(as_text=True))


def version_of(response) -> str:
    return VERSION_RE.search(response.get_data(as_text=True)).group(1)


def said(found: impact.Impact, verb: str = "will") -> str:
    """services.impact's numbers as the dashboard words them (templates/segments/_impact.html)."""
    words = f"{found.own.leaving:,} {verb} leave, {found.own.joining:,} {verb} join {found.segment}"
    for move in found.others:
        words += f"; {move.leaving:,} {verb} leave and {move.joining:,} join {move.slug}"
    return words


def moves_in_history(users, since: datetime) -> Counter:
    """{(segment, action): entries} in the history of ``users`` since ``since``."""
    counts: Counter = Counter()
    for user in users:
        for entry in history.user_history(db.session, user, start=since):
            counts[(entry.segment, entry.operation)] += 1
    return counts


def segment_exists(api, slug: str) -> bool:
    return api.get(f"/segments/{slug}").status_code == 200


def a_group_with_members(api, left: str, right: str, group: str) -> None:
    """``left`` (explicit members 1-300, 0%) and ``right`` (a 50% rollout) in one group: when
    ``left``'s explicit members go, those of them ``right``'s rollout covers join ``right``."""
    api.segment(left, exclusion_group=group)
    assert api.post(f"/segments/{left}/members", {"user_ids": list(range(1, 301))}).status_code == 200
    api.segment(right, rollout_percent=50, exclusion_group=group)


# -- delete ---------------------------------------------------------------------------------------


def test_the_delete_page_says_who_leaves_and_joins_and_history_agrees(api, client, csrf):
    a_group_with_members(api, "DEL_LEFT", "DEL_RIGHT", "DEL_GROUP")
    page = client.get("/segments/DEL_LEFT/delete")
    expected = impact.preview_delete(db.session, "DEL_LEFT")
    assert expected.own.leaving == 300 and expected.others[0].joining > 0
    assert f"Deleting now: {said(expected)} (of 300 known users, as of now)." in shown(page)
    assert version_of(page) == str(expected.catalog_version)
    assert f"Delete segment: 300 leave, {expected.others[0].joining} join" in shown(page)
    since = datetime.now(UTC)
    done = client.post(
        "/segments/DEL_LEFT/delete",
        data={"csrf_token": csrf, "confirm": "DEL_LEFT", "catalog_version": version_of(page)},
        follow_redirects=True,
    )
    joined = expected.others[0].joining
    assert f"Segment DEL_LEFT deleted; 300 members left it; {joined:,} joined DEL_RIGHT." in shown(done)
    counts = moves_in_history(range(1, 301), since)
    assert counts == Counter({("DEL_LEFT", Action.REMOVED): 300, ("DEL_RIGHT", Action.ADDED): joined})


def test_a_delete_against_a_newer_catalog_shows_the_new_numbers_and_deletes_nothing(api, client, csrf):
    api.segment("DEL_STALE", rollout_percent=30)
    assert api.post("/segments/DEL_STALE/members", {"user_ids": [1, 2, 3]}).status_code == 200
    page = client.get("/segments/DEL_STALE/delete")
    assert "Deleting now: 3 will leave, 0 will join DEL_STALE" in shown(page)
    # the catalog moves on (another PM raises the rollout; users 4-200 become known)
    api.segment("KNOWN_ELSEWHERE")
    assert api.post("/segments/KNOWN_ELSEWHERE/members", {"user_ids": list(range(4, 201))}).status_code == 200
    assert api.patch("/segments/DEL_STALE", {"rollout_percent": 60}).status_code == 200
    again = client.post(
        "/segments/DEL_STALE/delete",
        data={"csrf_token": csrf, "confirm": "DEL_STALE", "catalog_version": version_of(page)},
    )
    assert again.status_code == 200 and segment_exists(api, "DEL_STALE")
    now = impact.preview_delete(db.session, "DEL_STALE")
    assert now.own.leaving > 3
    assert f"The segments changed since the last numbers. Deleting now: {said(now)}" in shown(again)
    assert version_of(again) == str(now.catalog_version) != version_of(page)
    assert 'value="DEL_STALE"' in again.get_data(as_text=True)  # the slug typed stays typed
    done = client.post(
        "/segments/DEL_STALE/delete",
        data={"csrf_token": csrf, "confirm": "DEL_STALE", "catalog_version": version_of(again)},
    )
    assert done.status_code == 302 and not segment_exists(api, "DEL_STALE")


def test_a_wrongly_typed_slug_keeps_the_numbers(api, client, csrf):
    api.segment("DEL_TYPO")
    assert api.post("/segments/DEL_TYPO/members", {"user_ids": [7]}).status_code == 200
    wrong = client.post("/segments/DEL_TYPO/delete", data={"csrf_token": csrf, "confirm": "del_typo"})
    assert wrong.status_code == 422
    assert "Deleting now: 1 will leave, 0 will join DEL_TYPO" in shown(wrong)
    assert "Type DEL_TYPO exactly as shown (upper case) to confirm." in shown(wrong)


# -- a scheduled step -----------------------------------------------------------------------------


def future(hours: int) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")


def lowering(api, slug: str) -> None:
    api.segment(slug, rollout_percent=50)
    api.segment(f"{slug}_KNOWN")
    assert api.post(f"/segments/{slug}_KNOWN/members", {"user_ids": list(range(1, 1001))}).status_code == 200


def test_the_schedule_form_counts_a_step_as_if_it_applied_now(api, client):
    lowering(api, "PLAN_LIVE")
    when = future(30)
    live = client.get(f"/segments/PLAN_LIVE/schedule-impact?at={when}&rollout_percent=10")
    at = datetime.fromisoformat(when).replace(tzinfo=UTC)
    expected = impact.preview_schedule(db.session, "PLAN_LIVE", at, "10")
    assert expected.own.leaving > 0 and expected.own.joining == 0
    assert f"If it applied now: {said(expected, 'would')} (of 1,000 known users, counted today)." in shown(
        live
    )
    raising = client.get(f"/segments/PLAN_LIVE/schedule-impact?at={when}&rollout_percent=50")
    assert "If it applied now: nobody would leave or join PLAN_LIVE" in shown(raising)
    assert shown(client.get("/segments/PLAN_LIVE/schedule-impact?at=&rollout_percent=10")) == ""
    past = client.get(f"/segments/PLAN_LIVE/schedule-impact?at={future(-2)}&rollout_percent=10")
    assert "That time has passed" in shown(past)


def test_a_step_that_takes_users_out_is_confirmed_against_its_catalog_version(api, htmx):
    lowering(api, "PLAN_DOWN")
    form = {"at": future(30), "rollout_percent": "10"}
    asked = htmx("/segments/PLAN_DOWN/schedule", form)
    expected = impact.preview_schedule(
        db.session, "PLAN_DOWN", datetime.fromisoformat(form["at"]).replace(tzinfo=UTC), "10"
    )
    assert asked.status_code == 200 and "HX-Trigger" not in asked.headers
    assert f"If it applied now: {said(expected, 'would')} (of 1,000 known users, counted today)." in shown(
        asked
    )
    assert f"Confirm: {expected.leaving:,} leave, 0 join" in shown(asked)
    assert api.get("/segments/PLAN_DOWN/schedule").json["items"] == []  # nothing added yet
    confirm = re.search(r'name="confirmed" value="([^"]+)"', asked.get_data(as_text=True)).group(1)
    assert confirm == f"{form['at']}|10"
    # values changed after the numbers were shown: asked again, nothing added
    other = htmx(
        "/segments/PLAN_DOWN/schedule",
        {**form, "rollout_percent": "5", "confirmed": confirm, "catalog_version": version_of(asked)},
    )
    assert "Confirm:" in shown(other) and api.get("/segments/PLAN_DOWN/schedule").json["items"] == []
    api.segment("PLAN_ELSE")  # the catalog moves on
    again = htmx(
        "/segments/PLAN_DOWN/schedule", {**form, "confirmed": confirm, "catalog_version": version_of(asked)}
    )
    assert "The segments changed since the last numbers. If it applied now:" in shown(again)
    assert version_of(again) != version_of(asked)
    assert api.get("/segments/PLAN_DOWN/schedule").json["items"] == []
    added = htmx(
        "/segments/PLAN_DOWN/schedule", {**form, "confirmed": confirm, "catalog_version": version_of(again)}
    )
    assert added.status_code == 200 and added.headers["HX-Trigger"] == "segment-changed"
    assert "PLAN_DOWN will change to 10%" in shown(added)
    assert [i["rollout_percent"] for i in api.get("/segments/PLAN_DOWN/schedule").json["items"]] == [10]


def test_a_step_that_takes_nobody_out_is_added_at_once(api, htmx):
    lowering(api, "PLAN_UP")
    added = htmx("/segments/PLAN_UP/schedule", {"at": future(30), "rollout_percent": "70"})
    assert added.status_code == 200 and "PLAN_UP will change to 70%" in shown(added)


def test_without_javascript_the_step_is_confirmed_on_the_whole_page(api, client, csrf):
    lowering(api, "PLAN_NOJS")
    form = {"at": future(30), "rollout_percent": "10", "csrf_token": csrf}
    asked = client.post("/segments/PLAN_NOJS/schedule", data=form)
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and '<h1 class="slug-title">PLAN_NOJS</h1>' in html
    assert "If it applied now:" in shown(asked) and 'id="schedule-confirm"' in html
    # the settings form shows the segment's own rollout, not the step's value
    settings = html[html.index('id="segment-settings"') : html.index('id="schedule"')]
    assert 'name="rollout_percent" type="number"' in settings and 'value="50"' in settings
    confirm = re.search(r'name="confirmed" value="([^"]+)"', html).group(1)
    done = client.post(
        "/segments/PLAN_NOJS/schedule",
        data={**form, "confirmed": confirm, "catalog_version": version_of(asked)},
    )
    assert done.status_code == 302
    assert [i["rollout_percent"] for i in api.get("/segments/PLAN_NOJS/schedule").json["items"]] == [10]


# -- bulk remove and replace ----------------------------------------------------------------------


def test_bulk_previews_are_the_services_numbers_with_other_segments_moves(api, htmx):
    a_group_with_members(api, "BULK_LEFT", "BULK_RIGHT", "BULK_GROUP")
    outside = [u for u in range(301, 401) if not api.active(u)]  # not in BULK_RIGHT's rollout
    ids = [*range(201, 301), *outside]  # 201-300 stay, 1-200 leave, ``outside`` join
    listed = "\n".join(map(str, ids))
    preview = htmx("/segments/BULK_LEFT/members/bulk-preview", {"mode": "replace", "user_ids": listed})
    expected = impact.preview_replace(db.session, "BULK_LEFT", ids)
    assert (expected.own.leaving, expected.own.joining) == (200, len(outside)) and outside
    assert expected.others and expected.others[0].slug == "BULK_RIGHT"
    assert f"Replace members with this list: {said(expected)}" in shown(preview)
    assert f"Confirm: {expected.leaving:,} leave, {expected.joining:,} join" in shown(preview)
    assert version_of(preview) == str(expected.catalog_version)
    since = datetime.now(UTC)
    applied = htmx(
        "/segments/BULK_LEFT/members/bulk-change",
        {
            "mode": "replace",
            "user_ids": listed,
            "confirm": "yes",
            "fingerprint": FINGERPRINT_RE.search(preview.get_data(as_text=True)).group(1),
            "catalog_version": version_of(preview),
        },
    )
    assert f"BULK_LEFT replaced: {len(outside)} joined, 200 left" in shown(applied), shown(applied)
    counts = moves_in_history(range(1, 401), since)
    assert (
        counts
        == Counter(
            {
                ("BULK_LEFT", Action.REMOVED): 200,
                ("BULK_LEFT", Action.ADDED): len(outside),
                ("BULK_RIGHT", Action.ADDED): expected.others[0].joining,
                ("BULK_RIGHT", Action.REMOVED): expected.others[0].leaving,
            }
        )
        - Counter()
    )  # (zero counts dropped)


def test_a_bulk_change_against_a_newer_catalog_shows_the_new_numbers(api, htmx):
    api.segment("BULK_STALE")
    assert api.post("/segments/BULK_STALE/members", {"user_ids": list(range(1, 21))}).status_code == 200
    data = {"mode": "remove", "user_ids": "1 2 3 4 5"}
    preview = htmx("/segments/BULK_STALE/members/bulk-preview", data)
    assert "Remove these ids: 5 will leave, 0 will join BULK_STALE" in shown(preview)
    fingerprint = FINGERPRINT_RE.search(preview.get_data(as_text=True)).group(1)
    api.patch("/segments/BULK_STALE", {"rollout_percent": 100})  # users 1-5 now also in through the rollout
    again = htmx(
        "/segments/BULK_STALE/members/bulk-change",
        {**data, "confirm": "yes", "fingerprint": fingerprint, "catalog_version": version_of(preview)},
    )
    assert again.status_code == 200 and "HX-Trigger" not in again.headers
    assert "The segments changed since the last numbers. Remove these ids: 5 will leave" in shown(again)
    assert any(s["slug"] == "BULK_STALE" for s in api.active(1))  # nothing removed
    done = htmx(
        "/segments/BULK_STALE/members/bulk-change",
        {**data, "confirm": "yes", "fingerprint": fingerprint, "catalog_version": version_of(again)},
    )
    assert done.status_code == 200 and "5 removed from BULK_STALE" in shown(done)


def test_without_javascript_a_file_is_carried_to_the_confirmation(api, client, csrf):
    api.segment("BULK_NOJS")
    assert api.post("/segments/BULK_NOJS/members", {"user_ids": list(range(1, 11))}).status_code == 200
    upload = b"user_id\n" + b"\n".join(str(i).encode() for i in range(8, 16))
    preview = client.post(
        "/segments/BULK_NOJS/members/bulk-preview",
        data={"mode": "replace", "csrf_token": csrf, "file": (io.BytesIO(upload), "ids.csv")},
        content_type="multipart/form-data",
    )
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and '<h1 class="slug-title">BULK_NOJS</h1>' in html
    assert "Replace members with this list: 7 will leave, 5 will join BULK_NOJS" in shown(preview)
    assert 'name="carried_ids" value="8,9,10,11,12,13,14,15"' in html
    assert "The file's 8 ids are kept with this confirmation" in shown(preview)
    done = client.post(
        "/segments/BULK_NOJS/members/bulk-change",
        data={
            "mode": "replace",
            "csrf_token": csrf,
            "carried_ids": "8,9,10,11,12,13,14,15",
            "confirm": "yes",
            "fingerprint": FINGERPRINT_RE.search(html).group(1),
            "catalog_version": version_of(preview),
        },
    )
    assert done.status_code == 302
    found = api.get("/segments/BULK_NOJS/members").json
    assert [m["user_id"] for m in found["items"]] == list(range(8, 16))
