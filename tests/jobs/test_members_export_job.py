"""A large member export end to end: API -> RQ on real Redis -> worker -> file -> the
dashboard's download, in the spreadsheet format."""

import csv
import io

import sqlalchemy as sa

from webapp.jobs import worker
from webapp.services.history import reports
from webapp.services.segments.lifecycle import create_segment


def test_a_large_export_runs_as_a_job_with_progress_then_downloads(redis_app, committed_db, monkeypatch):
    segment = create_segment(committed_db, "EXP_JOB")
    committed_db.flush()
    committed_db.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) SELECT g, :s, now(), "
            "CASE WHEN g % 3 = 0 THEN now() + interval '2 days' END FROM generate_series(1, 25000) g"
        ),
        {"s": segment.id},
    )
    committed_db.commit()
    monkeypatch.setattr(reports, "EXPORT_IN_REQUEST", 10_000)
    client = redis_app.test_client()
    queued = client.post(
        "/api/v1/segments/EXP_JOB/members:export", json={"format": "spreadsheet", "separator": ";"}
    )
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    worker.run_worker(redis_app, burst=True, fork=False)
    done = client.get(queued.json["status_url"]).json
    assert done["status"] == "finished" and done["rows"] == 25_000 and done["progress"] == 100, done
    page = client.get(f"/reports/{done['id']}/download")  # the dashboard's own link
    assert page.status_code == 200
    name = page.headers["Content-Disposition"].split("filename=")[1]
    assert name.startswith("members-EXP_JOB_") and name.endswith(".csv")
    text = page.data.decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))
    assert table[0] == ["user_id", "segment", "source", "added_utc", "expires_utc"] and len(table) == 25_001
    assert table[3][2] == "ttl" and table[3][4] and table[1][2] == "explicit" and table[1][4] == ""
