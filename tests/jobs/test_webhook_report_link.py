"""A finished report is a ``report.finished`` webhook (issue 27) carrying a signed download link
that expires: the link downloads the file without an API token, an altered or expired one is
404 ``link_invalid``; the report stays private to its owner through the API otherwise."""

from __future__ import annotations

import pytest

from tests.support.checks import AUTH, TOKENS
from tests.support.processes import wait_for
from tests.support.webhooks import receiver
from webapp.errors import NotFound
from webapp.jobs import worker
from webapp.platform.extensions import db
from webapp.services.history import reports
from webapp.services.segments.lifecycle import create_segment


def test_report_finished_is_delivered_with_a_signed_expiring_link(app_on, redis_app, committed_db):
    app = app_on(API_TOKENS=TOKENS)
    client = app.test_client()
    create_segment(committed_db, "LINKED")
    committed_db.commit()
    with receiver() as hooks:
        sub = client.post(
            "/api/v1/webhooks",
            json={"url": hooks.url("/reports"), "event_types": ["report.finished"]},
            headers=AUTH["write"],
        )
        hooks.secrets["/reports"] = sub.json["secret"]
        requested = client.post(
            "/api/v1/reports", json={"segment": "LINKED", "period": "2026-12"}, headers=AUTH["reports"]
        )
        assert requested.status_code == 202, requested.json
        with app.app_context():
            worker.run_worker(app, burst=True, fork=False)
        wait_for(lambda: hooks.events("/reports"), 10)
    (event,) = hooks.events("/reports")
    assert event.type == "report.finished" and event.data["report"] == requested.json["id"]
    assert event.data["download_expires_at"] and hooks.rejected == []
    link = event.data["download_url"]
    assert link.startswith("/api/v1/report-links/")
    download = client.get(link)  # no Authorization header: the link is the credential
    assert download.status_code == 200 and download.mimetype == "text/csv"
    altered = client.get(link[:-2] + ("AA" if not link.endswith("AA") else "BB"))
    assert altered.status_code == 404 and altered.json["error"]["details"][0]["code"] == "link_invalid"
    # otherwise private: another client's token does not see it
    assert client.get(f"/api/v1/reports/{requested.json['id']}", headers=AUTH["write"]).status_code == 404
    with app.app_context():
        token = link.rsplit("/", 1)[1]
        with pytest.raises(NotFound):
            reports.report_from_link(db.session, token, app.config["SECRET_KEY"], max_age=-1)  # expired
        db.session.remove()
