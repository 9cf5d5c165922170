"""Dashboard, third pass (issue 24): scheduled changes visible — the next step on the segments
list and under the segment page's Rollout card — and entered in the browser's time zone (the form's
``zone``, filled in by static/local-time.js; UTC without it), always shown with the zone named and
the month by name. The API docs page has the dashboard's header; the demo data's message tells
the truth about each segment."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SSO = {"X-Forwarded-Email": "pm@example.com"}


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def ahead(days: int, hour: int = 10) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


def words(at: datetime) -> str:
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


def test_list_and_rollout_card_show_the_next_pending_step_in_words(client, api):
    api.segment("AVITO_PLAN", rollout_percent=10)
    api.segment("AVITO_QUIET")
    first, later, cancelled = ahead(3), ahead(5), ahead(2)
    for at, percent in ((later, 20), (first, 5), (cancelled, 50)):
        assert (
            api.post(
                "/segments/AVITO_PLAN/schedule", {"at": at.isoformat(), "rollout_percent": percent}
            ).status_code
            == 201
        )
    entry = api.get("/segments/AVITO_PLAN/schedule").json["items"][0]
    assert api.delete(f"/segments/AVITO_PLAN/schedule/{entry['id']}").status_code == 200  # the 50%: cancelled

    listing = client.get("/", headers=SSO).get_data(as_text=True)
    row = next(r for r in listing.split("<tr>") if "AVITO_PLAN" in r)
    assert f"→ 5% on {words(first)}" in text_of(row)  # the next one, not the cancelled one, not the later one
    assert f'datetime="{first:%Y-%m-%dT%H:%M:%S}' in row and 'data-local="date"' in row
    quiet = next(r for r in listing.split("<tr>") if "AVITO_QUIET" in r)
    assert "→" not in text_of(quiet)

    page = client.get("/segments/AVITO_PLAN", headers=SSO).get_data(as_text=True)
    card = page.split('data-stat="rollout"')[1].split('class="stat chart-stat"')[0]
    assert "10%" in card and f"→ 5% on {words(first)}" in text_of(card) and 'href="#schedule"' in card
    timeline = text_of(page.split('id="schedule"')[1].split("</ol>")[0])
    assert f"{first:%a} {words(first)}" in timeline  # the timeline: weekday, day, month by name
    assert "When ( UTC )" in text_of(
        page.split('id="schedule-form"')[1]
    )  # the zone named (no JavaScript: UTC)


def test_a_time_entered_in_the_browsers_zone_is_stored_in_utc_and_said_in_both(client, api, htmx):
    api.segment("AVITO_ZONE")
    local = ahead(10).replace(tzinfo=None)
    response = htmx(
        "/segments/AVITO_ZONE/schedule",
        {"at": local.strftime("%Y-%m-%dT%H:%M"), "rollout_percent": "5", "zone": "Europe/Berlin"},
        headers=SSO,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = datetime.fromisoformat(api.get("/segments/AVITO_ZONE/schedule").json["items"][0]["at"])
    assert stored == local.replace(tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    berlin = stored.astimezone(ZoneInfo("Europe/Berlin"))
    toast = text_of(response.get_data(as_text=True))
    assert (
        f"will change to 5% on {berlin.day} {berlin:%b %Y, %H:%M} {berlin.tzname()} ({stored:%H:%M} UTC)"
        in toast
    )
    assert berlin.tzname() in {"CET", "CEST"}

    # Without the zone (no JavaScript) the same typed time is UTC, and the message says UTC.
    response = htmx(
        "/segments/AVITO_ZONE/schedule",
        {"at": local.strftime("%Y-%m-%dT%H:%M"), "rollout_percent": "7"},
        headers=SSO,
    )
    assert f"will change to 7% on {words(local.replace(tzinfo=UTC))}." in text_of(
        response.get_data(as_text=True)
    )
    times = [item["at"] for item in api.get("/segments/AVITO_ZONE/schedule").json["items"]]
    assert datetime.fromisoformat(times[1]) == local.replace(tzinfo=UTC)


def test_an_unknown_zone_is_a_problem_next_to_the_time_field(client, api, htmx):
    api.segment("AVITO_ZONE")
    response = htmx(
        "/segments/AVITO_ZONE/schedule",
        {"at": ahead(3).strftime("%Y-%m-%dT%H:%M"), "rollout_percent": "5", "zone": "Mars/Olympus"},
        headers=SSO,
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="at-error"' in html and api.get("/segments/AVITO_ZONE/schedule").json["items"] == []


def test_the_api_docs_page_has_the_dashboards_header_and_a_way_back(client):
    html = client.get("/api/docs").get_data(as_text=True)
    header = html.split('<header class="top">')[1].split("</header>")[0]
    assert 'href="/"' in header and "Back to the dashboard" in header
    assert 'href="/groups"' in header and 'href="/reports"' in header
    assert 'aria-current="page">API' in header
    assert "header.css" in html and 'id="swagger-ui"' in html


def test_the_demo_message_says_which_segments_have_members(client, csrf):
    done = client.post("/demo-data", data={"csrf_token": csrf}, follow_redirects=True).get_data(as_text=True)
    message = text_of(done)
    assert (
        "Demo data loaded: 4 segments. AVITO_VOICE_MESSAGES, AVITO_PERFORMANCE_VAS and AVITO_DISCOUNT_30 "
        "have 200 members each; AVITO_DISCOUNT_50 has no members of its own: it reaches 10% of all "
        "users through its automatic rollout."
    ) in message
    assert "seed-demo" not in message
