"""Dashboard access through the SSO proxy's user header, and who may read which report."""

import pytest

from webapp.jobs.worker import run_worker

TOKENS = "svc-a:token-a-0123456789abcdef,svc-b:token-b-0123456789abcdef"
A = {"Authorization": "Bearer token-a-0123456789abcdef"}
B = {"Authorization": "Bearer token-b-0123456789abcdef"}
PM = {"X-Forwarded-Email": "pm@example.com"}


@pytest.fixture
def guarded(app_on, redis_app, committed_db):
    return app_on(API_TOKENS=TOKENS, DASHBOARD_OPEN=False)


def test_the_dashboard_needs_the_sso_user_unless_open(guarded, app_on):
    client = guarded.test_client()
    refused = client.get("/")
    assert refused.status_code == 401 and "Sign in through the company SSO" in refused.get_data(as_text=True)
    page = client.get("/", headers=PM).get_data(as_text=True)
    assert "Signed in as <strong>pm@example.com</strong>" in page
    assert "Open local mode" in app_on(DASHBOARD_OPEN=True).test_client().get("/").get_data(as_text=True)


def test_the_sso_user_is_the_actor_of_dashboard_changes(guarded):
    client = guarded.test_client()
    assert client.post("/api/v1/segments", json={"slug": "SSO"}, headers=A).status_code == 201
    token = (
        client.get("/", headers=PM).get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    )
    client.post("/users/5/segments", data={"slug": "SSO", "csrf_token": token}, headers=PM)
    items = client.get("/api/v1/users/5/history", headers=A).json["items"]
    assert [(i["operation"], i["actor"]) for i in items] == [("added", "pm@example.com")]


def test_reports_are_readable_by_who_requested_them(guarded):
    client = guarded.test_client()
    client.post("/api/v1/segments", json={"slug": "OWNED"}, headers=A)
    report = client.post(
        "/api/v1/reports", json={"kind": "segment_members", "segment": "OWNED"}, headers=A
    ).json
    run_worker(guarded, burst=True, fork=False)
    assert client.get(f"/api/v1/reports/{report['id']}", headers=A).json["status"] == "finished"
    assert client.get(f"/api/v1/reports/{report['id']}.csv", headers=A).status_code == 200
    for path in (f"/api/v1/reports/{report['id']}", f"/api/v1/reports/{report['id']}.csv"):
        assert client.get(path, headers=B).status_code == 404  # another client: not even its existence
    download = client.get(f"/reports/{report['id']}/download", headers=PM)  # the dashboard's own link
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert client.get(f"/reports/{report['id']}/download").status_code == 401
