"""Dashboard: exclusion groups, scheduled rollout changes, the activity log, reach and its cache."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.checks import outage_limit
from tests.support.processes import stopped_with_sigstop
from webapp.platform.extensions import db
from webapp.services.reads import reach
from webapp.services.rollout import buckets as rollout

SSO = {"X-Forwarded-Email": "pm@example.com"}


@pytest.fixture(autouse=True)
def fresh_cache(app, monkeypatch):
    """Each test starts with an empty reach cache and a closed breaker (restored afterwards)."""
    monkeypatch.setattr(reach, "_bypass_until", 0.0)
    with app.app_context():
        from webapp.platform.redis_client import redis_client

        with contextlib.suppress(Exception):
            redis_client(app).delete(*redis_client(app).keys(app.config["CACHE_KEY_PREFIX"] + "*"))
    yield


def page(client, path, **kwargs):
    response = client.get(path, headers=SSO, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- activity log and actor ---------------------------------------------------------------------


def test_activity_log_names_the_sso_user_of_a_rollout_change(client, api, htmx):
    api.segment("AVITO_VOICE")
    response = htmx(
        "/segments/AVITO_VOICE/settings",
        {"description": "Voice", "rollout_percent": "12.5", "exclusion_group": ""},
        headers=SSO,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["HX-Trigger"] == "segment-changed"
    activity = text_of(page(client, "/segments/AVITO_VOICE/activity"))
    assert "Rollout changed from 0% to 12.5%" in activity
    assert "Description changed to “Voice”" in activity
    assert "pm@example.com" in activity
    assert "Created" in activity
    full = text_of(page(client, "/segments/AVITO_VOICE"))
    assert "Activity" in full and "pm@example.com" in full


def test_creating_from_the_dashboard_records_the_sso_actor(client, htmx):
    response = htmx("/segments", {"slug": "AVITO_NEW", "description": "", "rollout_percent": ""}, headers=SSO)
    assert response.status_code == 200
    rows = api_activity(client, "AVITO_NEW")
    assert rows[0]["kind"] == "created" and rows[0]["actor"] == "pm@example.com"


def api_activity(client, slug):
    response = client.get(f"/api/v1/segments/{slug}/activity")
    assert response.status_code == 200, response.json
    return response.json["items"]


# -- exclusion groups -------------------------------------------------------------------------------


def test_group_page_draws_each_share_and_the_free_space(client, api):
    api.segment("DISC_30", rollout_percent=30, exclusion_group="DISCOUNTS")
    api.segment("DISC_50", rollout_percent=50, exclusion_group="DISCOUNTS")
    html = page(client, "/groups/DISCOUNTS")
    spans = re.findall(
        r'class="share c\d" style="left: ([\d.]+)%; width: ([\d.]+)%"[^>]*data-slug="(\w+)"', html
    )
    widths = {}
    for left, width, slug in spans:
        widths[slug] = widths.get(slug, 0) + float(width)
        assert 0 <= float(left) <= 100
    assert widths == {"DISC_50": 50.0, "DISC_30": 30.0}
    assert "data-free>20%<" in html
    assert 'href="/segments/DISC_30"' in html and 'href="/segments/DISC_50"' in html
    index = page(client, "/groups")
    assert "DISCOUNTS" in index and "80% used" in index
    listing = page(client, "/")
    assert 'href="/groups/DISCOUNTS"' in listing


def test_unknown_and_lower_case_group_pages(client, api):
    api.segment("DISC_30", rollout_percent=30, exclusion_group="DISCOUNTS")
    assert client.get("/groups/NOPE", headers=SSO).status_code == 404
    lower = client.get("/groups/discounts", headers=SSO)
    assert lower.status_code == 404 and "/groups/DISCOUNTS" in lower.get_data(as_text=True)


def test_settings_put_a_segment_in_a_group_and_take_it_out(client, api, htmx):
    api.segment("DISC_30", rollout_percent=30)
    ok = htmx(
        "/segments/DISC_30/settings",
        {"description": "", "rollout_percent": "30", "exclusion_group": "DISCOUNTS"},
        headers=SSO,
    )
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert 'value="DISCOUNTS"' in ok.get_data(as_text=True)
    assert "In exclusion group" in page(client, "/segments/DISC_30")
    out = htmx(
        "/segments/DISC_30/settings",
        {"description": "", "rollout_percent": "30", "exclusion_group": ""},
        headers=SSO,
    )
    assert out.status_code == 200
    kinds = [item["kind"] for item in api_activity(client, "DISC_30")]
    assert kinds.count("group_changed") == 2
    assert "Taken out of group DISCOUNTS" in text_of(page(client, "/segments/DISC_30/activity"))


def test_a_full_group_is_refused_in_plain_words(client, api, htmx):
    api.segment("DISC_60", rollout_percent=60, exclusion_group="DISCOUNTS")
    api.segment("DISC_50", rollout_percent=50)
    response = htmx(
        "/segments/DISC_50/settings",
        {"description": "", "rollout_percent": "50", "exclusion_group": "DISCOUNTS"},
        headers=SSO,
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Group DISCOUNTS: at most 40% for this segment (40% is free)" in html
    assert "rollout_percent" not in text_of(html).replace('name="rollout_percent"', "")
    assert api.get("/segments/DISC_50").json.get("exclusion_group") in (None, "")


def test_a_lower_case_or_bad_group_name_is_explained(api, htmx):
    api.segment("DISC_5", rollout_percent=5)
    response = htmx(
        "/segments/DISC_5/settings",
        {"description": "", "rollout_percent": "5", "exclusion_group": "discounts"},
        headers=SSO,
    )
    assert response.status_code == 422
    assert "Group names are written in upper case: DISCOUNTS." in response.get_data(as_text=True)
    response = htmx(
        "/segments/DISC_5/settings",
        {"description": "", "rollout_percent": "5", "exclusion_group": "no spaces please"},
        headers=SSO,
    )
    assert response.status_code == 422
    assert "Group names use upper-case letters" in response.get_data(as_text=True)


def test_explicit_overlap_is_refused_with_409_in_plain_words(api, htmx):
    api.segment("DISC_A", exclusion_group="DISCOUNTS")
    api.segment("DISC_B")
    assert api.change(7, add=["DISC_A", "DISC_B"]).status_code == 200
    response = htmx(
        "/segments/DISC_B/settings",
        {"description": "", "rollout_percent": "0", "exclusion_group": "DISCOUNTS"},
        headers=SSO,
    )
    assert response.status_code == 422  # (the form comes back with the problem next to the group)
    html = text_of(response.get_data(as_text=True))
    assert (
        "1 users are explicit members of this segment and of DISC_A" in html
        or "explicit members of this segment and of DISC_A" in html
    )


# -- scheduled rollout changes -------------------------------------------------------------------------


def future(hours: int) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")


def test_schedule_add_and_cancel_twice(client, api, htmx):
    api.segment("AVITO_PLAN")
    for n in range(2):
        added = htmx(
            "/segments/AVITO_PLAN/schedule",
            {"at": future(24 + n), "rollout_percent": str(5 + n)},
            headers=SSO,
        )
        assert added.status_code == 200, added.get_data(as_text=True)
        assert added.headers["HX-Trigger"] == "segment-changed"
        html = added.get_data(as_text=True)
        ids = re.findall(r'data-schedule="(\d+)"', html)
        assert len(ids) == n + 1
        cancel = htmx(f"/segments/AVITO_PLAN/schedule/{ids[-1]}/cancel", headers=SSO)
        assert cancel.status_code == 200, cancel.get_data(as_text=True)
        assert "is cancelled" in cancel.get_data(as_text=True)
        assert cancel.get_data(as_text=True).count("state-cancelled") == n + 1
    activity = text_of(page(client, "/segments/AVITO_PLAN/activity"))
    assert activity.count("Scheduled 5% for") == 1 and "Cancelled the change to 6%" in activity
    assert "pm@example.com" in activity


def test_schedule_problems_in_plain_words(api, htmx):
    api.segment("AVITO_PLAN")
    past = htmx("/segments/AVITO_PLAN/schedule", {"at": future(-2), "rollout_percent": "5"}, headers=SSO)
    assert past.status_code == 422
    assert "That time has passed: choose a time in the future." in past.get_data(as_text=True)
    empty = htmx("/segments/AVITO_PLAN/schedule", {"at": "", "rollout_percent": "5"}, headers=SSO)
    assert "Choose the date and time of the change." in empty.get_data(as_text=True)
    bad = htmx("/segments/AVITO_PLAN/schedule", {"at": future(3), "rollout_percent": "150"}, headers=SSO)
    assert "Enter a percentage from 0 to 100." in bad.get_data(as_text=True)
    far = htmx("/segments/AVITO_PLAN/schedule", {"at": future(24 * 400), "rollout_percent": "5"}, headers=SSO)
    assert "at most a year ahead" in far.get_data(as_text=True)
    missing = htmx("/segments/AVITO_PLAN/schedule/999999/cancel", headers=SSO)
    assert missing.status_code == 422 and "There is no such scheduled change" in missing.get_data(
        as_text=True
    )


def test_a_scheduled_change_that_would_overfill_its_group_is_refused(api, htmx):
    api.segment("DISC_A", rollout_percent=50, exclusion_group="DISCOUNTS")
    api.segment("DISC_B", rollout_percent=10, exclusion_group="DISCOUNTS")
    response = htmx("/segments/DISC_B/schedule", {"at": future(5), "rollout_percent": "70"}, headers=SSO)
    assert response.status_code == 422
    assert "Group DISCOUNTS" in response.get_data(as_text=True)


def test_schedule_without_javascript_redirects_with_a_flash(client, api, csrf):
    api.segment("AVITO_PLAN")
    response = client.post(
        "/segments/AVITO_PLAN/schedule",
        headers=SSO,
        data={"at": future(30), "rollout_percent": "20", "csrf_token": csrf},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("#schedule")
    assert "will change to 20%" in page(client, "/segments/AVITO_PLAN")


# -- reach ----------------------------------------------------------------------------------------------


def test_reach_reads_as_share_plus_explicit_and_counts_known_users(client, api):
    seg = api.segment("AVITO_REACH", rollout_percent=10)
    api.segment("AVITO_PLAIN")
    users = list(range(1, 2001))
    assert api.post("/segments/AVITO_PLAIN/members", {"user_ids": users}).status_code == 200
    assert api.post("/segments/AVITO_REACH/members", {"user_ids": [5000, 5001, 5002]}).status_code == 200
    known = users + [5000, 5001, 5002]
    salt = db.session.execute(db.text("SELECT salt FROM segments WHERE slug = 'AVITO_REACH'")).scalar()
    covered = sum(1 for u in known if rollout.in_rollout(salt, u, 1000))
    listing = text_of(page(client, "/"))
    assert "10% of all users + 3 explicit" in listing
    assert f"{covered:,} of {len(known):,} known users" in listing
    assert "2,000 explicit members, no rollout" in listing
    segment_page = text_of(page(client, f"/segments/{seg['slug']}"))
    assert "10% of all users + 3 explicit" in segment_page
    assert f"{covered:,} of {len(known):,} known users" in segment_page


def test_reach_follows_a_rollout_change_at_once(client, api):
    api.segment("AVITO_REACH", rollout_percent=10)
    assert api.post("/segments/AVITO_REACH/members", {"user_ids": list(range(1, 1001))}).status_code == 200
    assert "10% of all users + 1,000 explicit" in text_of(page(client, "/"))
    assert api.patch("/segments/AVITO_REACH", {"rollout_percent": 50}).status_code == 200
    listing = text_of(page(client, "/"))
    assert "50% of all users + 1,000 explicit" in listing
    salt = db.session.execute(db.text("SELECT salt FROM segments WHERE slug = 'AVITO_REACH'")).scalar()
    assert (
        f"{sum(1 for u in range(1, 1001) if rollout.in_rollout(salt, u, 5000)):,} of 1,000 known" in listing
    )
    # a member added after the counts were cached shows at once (the key follows history)
    assert api.post("/segments/AVITO_REACH/members", {"user_ids": [4242]}).status_code == 200
    assert "50% of all users + 1,001 explicit" in text_of(page(client, "/"))


def test_member_counts_are_cached_and_exact(app, api):
    api.segment("AVITO_COUNT")
    assert api.post("/segments/AVITO_COUNT/members", {"user_ids": [1, 2, 3]}).status_code == 200
    segment_id = db.session.execute(db.text("SELECT id FROM segments WHERE slug = 'AVITO_COUNT'")).scalar()
    calls = []
    original = reach.segment_service.member_counts

    def counting(session, ids, now=None):
        calls.append(ids)
        return original(session, ids, now)

    reach.segment_service.member_counts = counting
    try:
        assert reach.member_counts(db.session, [segment_id]) == {segment_id: 3}
        assert reach.member_counts(db.session, [segment_id]) == {segment_id: 3}
        assert len(calls) == 1  # the second answer came from Redis
        assert api.post("/segments/AVITO_COUNT/members", {"user_ids": [4]}).status_code == 200
        assert reach.member_counts(db.session, [segment_id]) == {segment_id: 4}
        assert len(calls) == 2
    finally:
        reach.segment_service.member_counts = original


# -- the cache failing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stopped", "sigstopped"])
def test_reach_and_counts_are_computed_when_redis_fails(app_on, private_redis, db_session, fault):
    app = app_on(REDIS_URL=private_redis.url)
    client = app.test_client()
    assert (
        client.post("/api/v1/segments", json={"slug": "AVITO_REACH", "rollout_percent": 10}).status_code
        == 201
    )
    assert (
        client.post("/api/v1/segments/AVITO_REACH/members", json={"user_ids": [1, 2, 3]}).status_code == 200
    )
    started = time.perf_counter()
    assert "10% of all users + 3 explicit" in text_of(client.get("/", headers=SSO).get_data(as_text=True))
    baseline = time.perf_counter() - started  # Redis healthy
    reach._bypass_until = 0.0  # the breaker closed again: ask Redis at once
    if fault == "stopped":
        private_redis.stop()
        context = None
    else:
        context = stopped_with_sigstop(private_redis)
        context.__enter__()
    try:
        for path in ("/", "/segments/AVITO_REACH", "/segments/AVITO_REACH/reach"):
            started = time.perf_counter()
            response = client.get(path, headers=SSO)
            seconds = time.perf_counter() - started
            assert response.status_code == 200, response.get_data(as_text=True)[:400]
            assert "10% of all users + 3 explicit" in text_of(response.get_data(as_text=True))
            assert seconds < outage_limit(baseline), f"{path} took {seconds:.2f}s with Redis {fault}"
    finally:
        if context is not None:
            context.__exit__(None, None, None)
        else:
            private_redis.start()


# -- the 30-day chart ---------------------------------------------------------------------------------


def test_chart_has_axes_values_and_the_rollout_separately(client, api):
    api.segment("AVITO_CHART")
    assert api.post("/segments/AVITO_CHART/members", {"user_ids": list(range(1, 121))}).status_code == 200
    html = page(client, "/segments/AVITO_CHART/summary")
    assert 'class="members-line"' in html and 'class="rollout-line"' not in html
    assert "no rollout in this period" in html
    ticks = re.findall(r'class="tick members-tick">([\d,]+)<', html)
    assert ticks == ["0", "100", "200"]  # a round axis above the 120 members
    assert ">today<" in html and 'class="value members-value">120<' in html
    assert api.patch("/segments/AVITO_CHART", {"rollout_percent": 10}).status_code == 200
    html = page(client, "/segments/AVITO_CHART/summary")
    assert 'class="rollout-line"' in html
    assert re.findall(r'class="tick rollout-tick">([\d.]+%)<', html) == ["0%", "5%", "10%"]
    assert "Rollout <strong>10%</strong> of all users" in html


def test_a_full_group_states_the_segments_own_ceiling(client, api, htmx):
    """60% and 10% in a group: the first can have 90%, and the form says so (before: "at most 30%")."""
    api.segment("G_A", rollout_percent=60, exclusion_group="DISC")
    api.segment("G_B", rollout_percent=10, exclusion_group="DISC")
    form = {"description": "", "rollout_percent": "91", "exclusion_group": "DISC"}
    response = htmx("/segments/G_A/settings", form, headers=SSO)
    assert response.status_code == 422
    assert "at most 90% for this segment (it holds 60%, 30% is free)" in text_of(
        response.get_data(as_text=True)
    )
    assert htmx("/segments/G_A/settings", {**form, "rollout_percent": "90"}, headers=SSO).status_code == 200
