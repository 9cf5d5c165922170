"""Issue 12 through the Flask test client: bulk add that never loses ids, reports in a row,
fresh pages, page parts that refresh on HX-Trigger, plain words, first run."""

import io
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.checks import assert_plain, messages
from webapp.web.filters import num, reltime


# What a dashboard message must never show: a regex, a field name, range notation.
def bulk(htmx, slug, files=None, **form):
    data = dict(form)
    if files:
        data["file"] = (io.BytesIO(files[1].encode()), files[0])
    return htmx(f"/segments/{slug}/members", data, content_type="multipart/form-data")


# -- 1. bulk add ------------------------------------------------------------------------------------------


def test_paste_with_bad_tokens_names_each_with_its_line_and_adds_nothing(htmx, api):
    api.segment("PASTE")
    response = bulk(htmx, "PASTE", user_ids="-301, 302, 303\n304\nabc 305 1.5")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Nothing was added: 3 entries are not user ids." in html
    for line in (
        "Line 1: “-301” is negative: user ids start at 1.",
        "Line 3: “abc” is not a number.",
        "Line 3: “1.5” is not a whole number.",
    ):
        assert line in html
    assert html.count("Nothing was added") == 1  # once, next to the field
    assert api.get("/segments/PASTE").json["member_count"] == 0
    assert_plain(html)
    ok = bulk(htmx, "PASTE", user_ids="-301, 302, 303\n304\n305".replace("-301, ", ""))
    assert "4 added" in ok.get_data(as_text=True) and api.get("/segments/PASTE").json["member_count"] == 4


@pytest.mark.parametrize("text", ["-5, 7", "abc 8"])
def test_the_issue_pastes_report_the_bad_token(htmx, api, text):
    api.segment("PASTE_TWO")
    html = bulk(htmx, "PASTE_TWO", user_ids=text).get_data(as_text=True)
    assert "1 entry is not a user id" in html and "no user ids given" not in html


def test_pasted_text_never_has_a_header(htmx, api):
    api.segment("NO_HEADER")
    html = bulk(htmx, "NO_HEADER", user_ids="user_id\n1\n2").get_data(as_text=True)
    assert "“user_id” is not a number (pasted text has no header line" in html


def test_file_header_is_said_and_multi_column_uses_user_id(htmx, api):
    api.segment("FILES")
    html = bulk(htmx, "FILES", files=("ids.csv", "user_id\n1\n2\n3\n")).get_data(as_text=True)
    assert "3 added" in html and "ids.csv: the first line (“user_id”) was read as a column header." in html
    html = bulk(
        htmx, "FILES", files=("people.csv", "email,user_id,country\na@x,10,RU\nb@x,11,KZ\n")
    ).get_data(as_text=True)
    assert "2 added" in html and "the ids come from its user_id column" in html
    html = bulk(htmx, "FILES", files=("plain.txt", "20\n21,22\n")).get_data(as_text=True)
    assert "3 added" in html and "header" not in messages(html)[-1]
    bad = bulk(htmx, "FILES", files=("people.csv", "email,country\na@x,RU\n"))
    assert bad.status_code == 422 and "none is called user_id" in bad.get_data(as_text=True)
    assert "Choose people.csv again" in bad.get_data(as_text=True)
    assert api.get("/segments/FILES").json["member_count"] == 8


def test_paste_and_file_together_are_both_used(htmx, api):
    api.segment("BOTH")
    html = bulk(htmx, "BOTH", files=("ids.csv", "100\n101\n"), user_ids="1 2 3").get_data(as_text=True)
    assert "5 added" in html and "3 pasted and 2 from ids.csv" in html
    assert api.get("/segments/BOTH").json["member_count"] == 5
    bad = bulk(htmx, "BOTH", files=("ids.csv", "100\nx\n"), user_ids="4 y").get_data(as_text=True)
    assert "Line 1: “y” is not a number." in bad and "Line 2: “x” is not a number." in bad
    assert bad.count("Nothing was added") == 2  # one headline under each field
    assert api.get("/segments/BOTH").json["member_count"] == 5


def test_nothing_given_and_bad_expiry_are_said_next_to_their_fields(htmx, api):
    api.segment("EMPTY_BULK")
    html = bulk(htmx, "EMPTY_BULK", user_ids="  ").get_data(as_text=True)
    assert re.search(r'id="user_ids-error"[^>]*>\s*<p>Paste user ids or choose a file.</p>', html)
    html = bulk(htmx, "EMPTY_BULK", user_ids="5", expires_at="2001-01-01T00:00").get_data(as_text=True)
    assert 'id="expires_at-error"' in html and "already passed" in html
    assert_plain(html)


# -- 2. reports on the user page --------------------------------------------------------------------------


def test_user_reports_in_a_row_each_labelled_with_its_month(htmx, client, api):
    api.segment("REP")
    api.change(9, ["REP"])
    this_month = datetime.now(UTC).strftime("%Y-%m")
    first = htmx("/users/9/report", {"period": this_month}).get_data(as_text=True)
    assert (
        'id="user-reports-card"' in first and 'id="user-report"' in first
    )  # the form comes back with the list
    second = htmx("/users/9/report", {"period": "2024-02"}).get_data(as_text=True)
    assert second.index("February 2024") < second.index(datetime.now(UTC).strftime("%B %Y"))  # newest first
    assert all(
        'hx-target="this"' in status
        for status in re.findall(r'<div class="report-status"[^>]*>', second)
        if "hx-get" in status
    )
    page = client.get("/users/9").get_data(as_text=True)
    assert page.count('class="report-month"') == 2
    future = htmx("/users/9/report", {"period": "2999-05"})
    assert future.status_code == 422 and "May 2999 has not started yet" in future.get_data(as_text=True)


def test_user_reports_are_found_behind_any_number_of_newer_reports(htmx, client, db_session):
    """The user page asks for the user's own reports, not a window of everyone's latest."""
    import sqlalchemy as sa

    htmx("/users/12/report", {"period": "2024-03"})
    db_session.execute(
        sa.text(
            "INSERT INTO reports (id, kind, params, status, progress, rows, size_bytes, created_at) "
            "SELECT gen_random_uuid(), 'user_history', json_build_object('user_id', 13, 'period', '2024-03'), "
            "'finished', 100, 0, 0, now() + g * interval '1 second' FROM generate_series(1, 600) g"
        )
    )
    page = client.get("/users/12").get_data(as_text=True)
    assert page.count('class="report-month"') == 1 and "March 2024" in page
    assert (
        client.get("/users/13").get_data(as_text=True).count('class="report-month"') == 10
    )  # the latest ten


# -- 3. fresh pages ----------------------------------------------------------------------------------------


def test_html_is_never_stored_by_the_browser(client, api):
    api.segment("FRESH")
    for path in (
        "/",
        "/segments/FRESH",
        "/users/5",
        "/reports",
        "/segments/NOPE",
        "/fragments/jobs-status",
        "/segments/FRESH/summary",
    ):
        response = client.get(path)
        assert response.headers["Cache-Control"] == "no-store", path
    assert "no-store" not in client.get("/api/v1/segments").headers.get("Cache-Control", "")


# -- 4. parts of the segment page refresh after a change ----------------------------------------------------


def test_changes_on_the_segment_page_trigger_its_parts(htmx, client, api):
    api.segment("TRIGGER")
    page = client.get("/segments/TRIGGER").get_data(as_text=True)
    for part in ("segment-summary", "recent-changes"):
        assert re.search(rf'id="{part}"[^>]*hx-trigger="segment-changed from:body"', page, re.S), part
    for response in (
        htmx("/segments/TRIGGER/settings", {"description": "d", "rollout_percent": "5"}),
        bulk(htmx, "TRIGGER", user_ids="1 2"),
        htmx("/segments/TRIGGER/members/1/remove"),
    ):
        assert response.status_code == 200 and response.headers["HX-Trigger"] == "segment-changed"
    summary = client.get("/segments/TRIGGER/summary").get_data(as_text=True)
    assert 'data-stat="members">1<' in summary and 'data-stat="rollout">5%<' in summary
    assert "removed" in client.get("/segments/TRIGGER/recent").get_data(as_text=True)


# -- 7. plain words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, form, expected",
    [
        ("/segments", {"slug": "bad slug"}, "Use upper-case letters, digits and underscores"),
        ("/segments", {"slug": "X", "rollout_percent": "1.234"}, "Use at most two decimal places"),
        ("/segments", {"slug": "X", "rollout_percent": "101"}, "Enter a percentage from 0 to 100."),
        ("/segments/WORDS/settings", {"rollout_percent": "-1"}, "Enter a percentage from 0 to 100."),
        ("/users/5/segments", {"slug": ""}, "Choose a segment."),
        (
            "/users/5/segments",
            {"slug": "WORDS", "ttl_seconds": "5", "expires_at": "2100-01-01T00:00"},
            "Choose either an expiry period or a date and time, not both.",
        ),
        ("/reports", {"kind": "segment_members", "segment": ""}, "Enter the segment&#39;s slug."),
        (
            "/reports",
            {"kind": "user_history", "user_id": "99999999999999999999", "period": "2020-01"},
            "too large to be a user id",
        ),
    ],
)
def test_form_errors_are_plain_and_next_to_their_field(htmx, api, path, form, expected):
    api.segment("WORDS")
    response = htmx(path, form)
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and expected in html
    assert html.count(expected) == 1  # shown once
    assert_plain(html)


@pytest.mark.parametrize(
    "path, field, form",
    [
        ("/segments", "slug", {"slug": "lower_new"}),
        ("/users/5/segments", "slug", {"slug": "lower_new"}),
        ("/reports", "segment", {"kind": "segment_members", "segment": "lower_new"}),
    ],
)
def test_lower_case_slugs_are_offered_in_upper_case_everywhere(htmx, api, path, field, form):
    api.segment("LOWER_NEW", description="taken by the create case")
    html = htmx(path, form if path != "/segments" else {"slug": "lower_other"}).get_data(as_text=True)
    offered = "LOWER_OTHER" if path == "/segments" else "LOWER_NEW"
    assert "Slugs are written in upper case." in html
    assert f'name="use_{field}" value="{offered}">Use {offered}<' in html
    taken = htmx(
        path, {**form, f"use_{field}": offered} if path != "/segments" else {"slug": "x", "use_slug": offered}
    )
    assert taken.status_code == 200


def test_a_lower_case_segment_url_offers_the_upper_case_one(client, api):
    api.segment("URL_CASE")
    html = client.get("/segments/url_case").get_data(as_text=True)
    assert "Slugs are written in upper case" in html and 'href="/segments/URL_CASE"' in html


def test_header_lookup_trims_spaces_and_explains_bad_ids_on_a_page(client):
    assert client.get("/users?id=%20%2042%20").headers["Location"].endswith("/users/42")
    for typed, words in [
        ("-5", "“-5” is negative: user ids start at 1"),
        ("abc", "“abc” is not a number"),
        ("99999999999999999999", "is too large to be a user id"),
        ("", "Type a user id"),
    ]:
        response = client.get("/users", query_string={"id": typed})
        html = response.get_data(as_text=True)
        assert response.status_code == 200 and words in html and "<h1>Find a user</h1>" in html, typed
        assert "422" not in html
    assert client.get("/users/abc").status_code == 404


def test_error_pages_and_fragments_speak_plainly(client):
    page = client.get("/segments/NOPE").get_data(as_text=True)
    assert "There is no segment called NOPE." in page and "<h1>404</h1>" not in page
    assert_plain(page)
    fragment = client.get("/reports/zzz/status", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "There is no such report" in fragment and "id:" not in fragment


# -- 9. first run ------------------------------------------------------------------------------------------


def test_empty_dashboard_offers_demo_data_in_one_click(client, csrf, api):
    page = client.get("/").get_data(as_text=True)
    assert "Load demo data" in page and 'action="/demo-data"' in page
    done = client.post("/demo-data", data={"csrf_token": csrf}, follow_redirects=True).get_data(as_text=True)
    assert (
        "Demo data loaded: 4 segments" in done
        and "AVITO_VOICE_MESSAGES" in done
        and "Load demo data" not in done
    )
    assert api.get("/segments/AVITO_VOICE_MESSAGES").json["member_count"] == 200
    again = client.post("/demo-data", data={"csrf_token": csrf}, follow_redirects=True).get_data(as_text=True)
    assert "already there" in again and api.get("/segments").json["total"] == 4


def test_every_page_has_a_favicon_and_the_jobs_strip_without_javascript(client):
    page = client.get("/reports").get_data(as_text=True)
    assert 'rel="icon"' in page and client.get("/static/favicon.svg").status_code == 200
    strip = page.split('id="jobs-status"')[1].split("</div>")[0]
    assert "Next TTL purge" in strip and "Last purge" in strip and "load" not in strip.split(">")[0]


NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(days=7) - timedelta(seconds=1), "in 7 d"),
        (timedelta(days=6, hours=13), "in 7 d"),
        (timedelta(hours=23, minutes=40), "in 1 d"),
        (timedelta(minutes=59, seconds=40), "in 1 h"),
        (timedelta(hours=5, minutes=29), "in 5 h"),
        (timedelta(days=-3), "3 d ago"),
        (timedelta(days=1500), "in 1,500 d"),
    ],
)
def test_relative_times_round_to_the_nearest_unit(delta, text):
    assert reltime(NOW + delta, now=NOW) == text


def test_numbers_are_grouped(client, api):
    assert num(1_000_000) == "1,000,000" and num(0) == "0"
    api.segment("COUNTED")
    api.post("/segments/COUNTED/members", {"user_ids": list(range(1, 1235))})
    assert 'data-stat="members">1,234<' in client.get("/segments/COUNTED").get_data(as_text=True)
