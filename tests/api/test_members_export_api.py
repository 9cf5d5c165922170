"""The API's side of issue 24 item 6: ``POST /segments/<slug>/members:export`` (the dashboard's
*Export members* through the same service function) and the opt-in spreadsheet format of
``POST /reports``; without the option everything stays as its clients know it."""

from __future__ import annotations

import csv
import io

from webapp.services.history import reports


def rows(data: bytes, separator: str = ";") -> list[list[str]]:
    text = data.decode()
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=separator))


def test_export_members_in_the_request_in_the_apis_format_by_default(api, client):
    api.segment("EXP_API")
    assert api.post("/segments/EXP_API/members", {"user_ids": [3, 1, 2]}).status_code == 200
    api.post("/segments/EXP_API/members", {"user_ids": [4], "ttl_seconds": 3600})
    done = api.post("/segments/EXP_API/members:export", {})
    assert done.status_code == 201, done.json
    body = done.json
    assert body["status"] == "finished" and body["rows"] == 4 and body["kind"] == "segment_members"
    assert body["params"] == {"segment": "EXP_API"} and done.headers["Location"] == body["status_url"]
    download = client.get(body["download_url"])
    assert download.status_code == 200 and not download.data.startswith(b"\xef\xbb\xbf")
    table = rows(download.data)
    assert table[0] == ["user_id", "segment", "added_at", "expires_at"]
    assert [r[0] for r in table[1:]] == ["1", "2", "3", "4"] and table[4][3].endswith("Z")
    assert download.headers["Content-Disposition"] == "attachment; filename=members-EXP_API.csv"


def test_export_members_in_the_spreadsheet_format(api, client):
    api.segment("EXP_SHEET")
    api.post("/segments/EXP_SHEET/members", {"user_ids": [7, 8], "ttl_seconds": 86400})
    body = api.post("/segments/EXP_SHEET/members:export", {"format": "spreadsheet", "separator": ";"}).json
    assert body["params"] == {"segment": "EXP_SHEET", "format": "spreadsheet", "separator": ";"}
    download = client.get(body["download_url"])
    assert download.data.startswith(b"\xef\xbb\xbfuser_id;segment;source;added_utc;expires_utc\r\n")
    assert [r[:3] for r in rows(download.data)[1:]] == [["7", "EXP_SHEET", "ttl"], ["8", "EXP_SHEET", "ttl"]]
    name = download.headers["Content-Disposition"].split("filename=")[1]
    assert name.startswith("members-EXP_SHEET_") and name.endswith(".csv")  # unique to the report
    again = client.get(
        api.post("/segments/EXP_SHEET/members:export", {"format": "spreadsheet"}).json["download_url"]
    )
    assert again.headers["Content-Disposition"].split("filename=")[1] != name
    assert again.data.startswith(b"\xef\xbb\xbfuser_id,segment,source")  # "," by default


def test_a_large_export_answers_202_and_is_polled(api, client, monkeypatch):
    api.segment("EXP_LARGE")
    api.post("/segments/EXP_LARGE/members", {"user_ids": [1, 2, 3]})
    monkeypatch.setattr(reports, "EXPORT_IN_REQUEST", 2)
    queued = api.post("/segments/EXP_LARGE/members:export", {})
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    assert queued.json["download_url"] is None and client.get(queued.json["status_url"]).status_code == 200


def test_export_problems_are_the_envelope(api):
    assert api.post("/segments/NOPE_EXP/members:export", {}).status_code == 404
    api.segment("EXP_BAD")
    for body, code in (
        ({"separator": ";"}, "separator_invalid"),
        ({"format": "spreadsheet", "separator": "|"}, "literal_error"),
        ({"format": "xlsx"}, "literal_error"),
        ({"sep": ";"}, "extra_forbidden"),
    ):
        refused = api.post("/segments/EXP_BAD/members:export", body)
        assert refused.status_code == 422, (body, refused.json)
        assert refused.json["error"]["details"][0]["code"] == code, refused.json
    assert api.post("/segments/EXP_BAD/members:export").status_code == 415  # JSON only, as every write


def test_post_reports_format_is_opt_in(api, client):
    plain = api.post("/reports", {"user_id": 5, "period": "2025-05"}).json
    assert plain["params"] == {
        "from": "2025-05-01T00:00:00Z",
        "to": "2025-06-01T00:00:00Z",
        "period": "2025-05",
        "user_id": 5,
    }
    sheet = api.post(
        "/reports", {"user_id": 5, "period": "2025-05", "format": "spreadsheet", "separator": ";"}
    )
    assert (
        sheet.status_code == 202 and sheet.json["id"] != plain["id"]
    )  # another report, not the pending plain one
    assert sheet.json["params"]["format"] == "spreadsheet" and sheet.json["params"]["separator"] == ";"
    refused = api.post("/reports", {"user_id": 5, "period": "2025-05", "separator": ","})
    assert refused.status_code == 422 and refused.json["error"]["details"][0]["code"] == "separator_invalid"


def test_the_openapi_document_describes_the_export_and_the_format(client):
    doc = client.get("/api/openapi.json").json
    export = doc["paths"]["/api/v1/segments/{slug}/members:export"]["post"]
    assert {"201", "202", "404", "422"} <= set(export["responses"])
    schemas = doc["components"]["schemas"]
    for model in ("ReportRequest", "MembersExport"):
        (request,) = [
            s for name, s in schemas.items() if name.split(".")[0] == model and name.count(".") == 1
        ]
        assert "spreadsheet" in str(request["properties"]["format"]), model
        assert ";" in str(request["properties"]["separator"]), model
