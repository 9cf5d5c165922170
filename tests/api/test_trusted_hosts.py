"""Issue 22, finding 3: the Host header is never reflected into a link.

``Host: evil.example`` once gave ``Location``/``status_url``, ``/report_check``'s
``link_to_file`` and redirects to ``http://evil.example/…``. Now absolute links are built only
for ``TRUSTED_HOSTS``; any other Host answers 400 (the JSON envelope on /api and the seed's
paths, the error page on the dashboard), except the probes /healthz and /readyz.
"""

from __future__ import annotations

import pytest

from webapp import create_app
from webapp.models import Report
from webapp.services.common import utcnow

EVIL = "evil.example"


def _no_evil(response) -> None:
    seen = " ".join(f"{k}: {v}" for k, v in response.headers.items()) + response.get_data(as_text=True)
    assert f"//{EVIL}" not in seen and f"//localhost.{EVIL}" not in seen, seen[:500]  # no link to it


def _refused_json(response) -> None:
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.json["error"]
    assert error["code"] == "untrusted_host" and error["details"][0]["field"] == "Host", error
    _no_evil(response)


def test_links_use_the_configured_host(client, api):
    api.segment("HOSTS")
    month = utcnow().strftime("%Y-%m")
    queued = api.post("/reports", {"user_id": 1, "period": month})
    assert queued.status_code == 202
    assert queued.headers["Location"].startswith("http://localhost/api/v1/reports/")
    assert queued.json["status_url"].startswith("http://localhost/")
    trusted = client.get("/api/v1/users/1/segments", headers={"Host": "127.0.0.1:8000"})
    assert trusted.status_code == 200


@pytest.mark.parametrize("host", [EVIL, f"{EVIL}:8000", "localhost.evil.example", "", "bad host!"])
def test_api_and_seed_routes_refuse_another_host(client, api, db_session, host):
    api.segment("HOSTS")
    headers = {"Host": host}
    month = utcnow().strftime("%Y-%m")
    before = db_session.query(Report).count()
    calls = [
        client.post("/api/v1/reports", json={"user_id": 1, "period": month}, headers=headers),
        client.post("/api/v1/segments/HOSTS/members", json={"user_ids": [1]}, headers=headers),
        client.get("/api/v1/users/1/segments", headers=headers),  # the hot path (in front of Flask)
        client.get("/segment/user?id=1", headers=headers),  # the seed's hot path
        client.get("/api/v1/segments", headers=headers),
        client.get("/api/v1/nowhere", headers=headers),
        client.get(f"/report?date={month}", headers=headers),
        client.get("/report_check?task_id=00000000-0000-0000-0000-000000000000", headers=headers),
        client.get("/download?id=00000000-0000-0000-0000-000000000000", headers=headers),
        client.post("/segment", json={"slug": "EVIL"}, headers=headers),
    ]
    for response in calls:
        _refused_json(response)
    assert db_session.query(Report).count() == before  # refused before anything ran


def test_a_finished_report_check_never_links_elsewhere(client, api):
    month = utcnow().strftime("%Y-%m")
    task = client.get(f"/report?date={month}").json["task_id"]
    response = client.get(f"/report_check?task_id={task}", headers={"Host": EVIL})
    _refused_json(response)


def test_the_dashboard_refuses_another_host_with_its_error_page(client):
    page = client.get("/", headers={"Host": EVIL})
    assert page.status_code == 400 and page.mimetype == "text/html"
    assert "Traceback" not in page.get_data(as_text=True)
    _no_evil(page)
    fragment = client.get("/", headers={"Host": EVIL, "HX-Request": "true"})
    assert fragment.status_code == 400 and fragment.headers["HX-Retarget"] == "#flash"
    posted = client.post("/segments", data={"slug": "EVIL"}, headers={"Host": EVIL})
    assert posted.status_code == 400
    _no_evil(posted)


def test_probes_answer_whatever_the_host(client):
    assert client.get("/healthz", headers={"Host": EVIL}).status_code == 200
    ready = client.get("/readyz", headers={"Host": EVIL})
    assert ready.status_code in (200, 503) and ready.status_code != 400


def test_a_forwarded_host_is_checked_too(app_on, db_session):
    client = app_on(TRUSTED_PROXIES=1).test_client()
    refused = client.get("/api/v1/segments", headers={"X-Forwarded-Host": EVIL})
    _refused_json(refused)
    assert client.get("/api/v1/segments", headers={"X-Forwarded-Host": "localhost"}).status_code == 200


def production(app, **overrides):
    return {**app.config, "TESTING": False, "SECRET_KEY": "k" * 48, **overrides}


@pytest.mark.parametrize("hosts", [None, [], "", " , "])
def test_production_refuses_to_start_without_trusted_hosts(app, hosts):
    with pytest.raises(RuntimeError, match="TRUSTED_HOSTS must name the hosts"):
        create_app(production(app, TRUSTED_HOSTS=hosts))


@pytest.mark.parametrize(
    "hosts", ["https://segments.example.com", "segments.example.com:8000", "a/b", "*.example.com"]
)
def test_a_malformed_entry_refuses_to_start(app, hosts):
    with pytest.raises(RuntimeError, match="TRUSTED_HOSTS entry 1"):
        create_app(production(app, TRUSTED_HOSTS=hosts))


def test_configured_hosts_start_and_take_subdomains_when_asked(app):
    built = create_app(production(app, TRUSTED_HOSTS="segments.example.com, .internal.example"))
    assert built.config["TRUSTED_HOSTS"] == ["segments.example.com", ".internal.example"]
    client = built.test_client()
    assert client.get("/healthz", headers={"Host": "segments.example.com"}).status_code == 200
    assert client.get("/api/v1/segments", headers={"Host": "a.internal.example"}).status_code != 400
    _refused_json(client.get("/api/v1/segments", headers={"Host": "localhost"}))
