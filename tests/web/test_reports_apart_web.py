"""Issue 24 item 6 on the dashboard, without a browser: labels that tell reports apart, file
names of their own, the separator chosen once and remembered (a cookie: with or without
JavaScript), a sensible default from the browser's language, and *Export members*."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from webapp.services.common import utcnow

MONTH = datetime.now(UTC).strftime("%Y-%m")


def selected_separator(html: str) -> str:
    (value,) = re.findall(r'<option value="([,;])" selected>', html)
    return value


def test_the_separator_defaults_to_the_browsers_language_and_is_remembered(client, htmx):
    assert selected_separator(client.get("/users/7").get_data(as_text=True)) == ","
    german = client.get("/users/7", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert selected_separator(german.get_data(as_text=True)) == ";"
    assert (
        selected_separator(client.get("/reports", headers={"Accept-Language": "ru"}).get_data(as_text=True))
        == ";"
    )
    assert (
        selected_separator(
            client.get("/reports", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
        )
        == ","
    )
    chosen = htmx("/users/7/report", {"period": MONTH, "separator": ";"})
    assert chosen.status_code == 200
    cookie = chosen.headers["Set-Cookie"]
    assert cookie.startswith("csv_separator=semicolon;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # Remembered on every CSV form, whatever the browser's language says.
    for path in ("/users/8", "/reports"):
        html = client.get(path, headers={"Accept-Language": "en-US"}).get_data(as_text=True)
        assert selected_separator(html) == ";", path


def test_a_bad_separator_is_worded_next_to_its_field(htmx):
    refused = htmx("/users/7/report", {"period": MONTH, "separator": "|"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and 'id="separator-error"' in html
    assert "Choose commas or semicolons to separate the columns." in html
    assert "Set-Cookie" not in refused.headers


def test_two_reports_of_the_same_month_read_apart(client, htmx, api):
    api.segment("APART")
    api.change(42, add=["APART"])
    first = htmx("/users/42/report", {"period": MONTH, "separator": ","})
    assert first.status_code == 200
    page = client.get("/users/42").get_data(as_text=True)
    month = datetime.now(UTC).strftime("%B %Y")
    assert f'User 42 · <span class="report-month">{month}</span>' in page
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time> by dashboard · CSV, commas", page)
    reports_page = client.get("/reports").get_data(as_text=True)
    assert f"User 42 · {month}" in reports_page
    names = re.findall(r"history-user-42-" + MONTH + r"_\d{8}-\d{6}_[0-9a-f]{6}\.csv", reports_page)
    assert names, reports_page[:2000]


def test_the_dashboards_report_opens_in_a_spreadsheet(redis_app, committed_db):
    """Through the worker: BOM, the separator chosen, the reason and actor columns, a name of
    its own; and a second report of the same month gets another name."""
    from webapp.jobs.worker import run_worker

    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "OPENS"})
    client.post(
        "/api/v1/users/77/segments", json={"add": ["OPENS"]}, headers={"X-Actor": 'bob; "the", builder'}
    )
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/users/77").get_data(as_text=True))[1]
    names = []
    for _ in range(2):
        client.post("/users/77/report", data={"period": MONTH, "separator": ";", "csrf_token": token})
        run_worker(redis_app, burst=True, fork=False)
        report_id = re.search(
            r"/reports/([0-9a-f-]{36})/download", client.get("/users/77").get_data(as_text=True)
        )[1]
        download = client.get(f"/reports/{report_id}/download")
        names.append(download.headers["Content-Disposition"].split("filename=")[1])
        text = download.data.decode("utf-8")
        assert text.startswith("\ufeff")
        table = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))
        assert table[0] == ["user_id", "segment", "operation", "time_utc", "reason", "actor"]
        assert table[1][:5] == ["77", "OPENS", "added", table[1][3], "api"] and "bob" in table[1][5]
        assert datetime.strptime(table[1][3], "%Y-%m-%d %H:%M:%S") <= utcnow().replace(tzinfo=None)
    assert names[0] != names[1] and all(n.startswith(f"history-user-77-{MONTH}_") for n in names)


def test_export_members_from_the_segment_page(client, htmx, api):
    api.segment("EXPORTED", rollout_percent=10)
    api.post("/segments/EXPORTED/members", {"user_ids": [5, 6]})
    page = client.get("/segments/EXPORTED").get_data(as_text=True)
    assert 'id="members-export"' in page and "The 10% rollout is not listed" in page
    done = htmx("/segments/EXPORTED/export", {"separator": ","})
    html = done.get_data(as_text=True)
    assert done.status_code == 200 and "2 members of EXPORTED exported" in html
    assert "Members of EXPORTED" in html and "Download CSV" in html
    link = re.search(r'href="(/reports/[0-9a-f-]{36}/download)"', html)[1]
    data = client.get(link).data.decode("utf-8")
    assert data.startswith("\ufeffuser_id,segment,source,added_utc,expires_utc\r\n5,EXPORTED,explicit,")
    # Without JavaScript: post, redirect back to the card, the flash says so.
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    plain = client.post("/segments/EXPORTED/export", data={"separator": ";", "csrf_token": token})
    assert plain.status_code == 302 and plain.headers["Location"].endswith(
        "/segments/EXPORTED#members-export"
    )
    after = client.get("/segments/EXPORTED").get_data(as_text=True)
    assert "2 members of EXPORTED exported" in after and after.count("Members of EXPORTED") == 2
    assert "CSV, semicolons" in after and "CSV, commas" in after
    assert client.post("/segments/NOPE_X/export", data={"csrf_token": token}).status_code == 404
