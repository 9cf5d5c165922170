"""Issue 22, finding 1: user ids are 64-bit everywhere, JSON parameters included.

A report of user 2**31 (stored in the report's JSON ``params``) once made every user page
answer 500: listing a user's reports cast ``params->>'user_id'`` to a 32-bit integer. Every
user-id field of every surface (API, seed routes, dashboard forms and pages, reports, the
batch lookup) is filled here with 2**63-1 and 2**31, and then every page and endpoint is
walked: nothing answers 500.
"""

from __future__ import annotations

import uuid

import pytest

from webapp.models import Report
from webapp.platform.extensions import db
from webapp.services.common import utcnow
from webapp.services.history import reports

BIG = [2**63 - 1, 2**31]
SLUG = "BIG_IDS"


def _no_500(response, what: str) -> None:
    assert response.status_code < 500, (
        f"{what}: {response.status_code} {response.get_data(as_text=True)[:300]}"
    )


@pytest.fixture
def filled(client, api, csrf):
    """Every user-id field filled with each big id (API, seed routes, dashboard, reports)."""
    api.segment(SLUG)
    month = utcnow().strftime("%Y-%m")
    form = {"X-CSRFToken": csrf}
    tasks: list[str] = []
    for uid in BIG:
        calls = [
            ("api change", api.change(uid, add=[{"slug": SLUG}])),
            ("api report", api.post("/reports", {"user_id": uid, "period": month})),
            ("api bulk add", api.post(f"/segments/{SLUG}/members", {"user_ids": [uid, 5]})),
            (
                "seed change",
                client.post("/segment/user", json={"user_id": uid, "add": [SLUG], "del": [], "ttl_days": 3}),
            ),
            ("seed report", client.get(f"/report?date={month}&user_id={uid}")),
            (
                "dashboard user report",
                client.post(f"/users/{uid}/report", data={"period": month}, headers=form),
            ),
            (
                "dashboard reports form",
                client.post(
                    "/reports",
                    data={"kind": "user_history", "user_id": str(uid), "period": month},
                    headers=form,
                ),
            ),
            (
                "dashboard add to user",
                client.post(f"/users/{uid}/segments", data={"slug": SLUG}, headers=form),
            ),
            (
                "dashboard bulk add",
                client.post(f"/segments/{SLUG}/members", data={"user_ids": f"{uid}, 7"}, headers=form),
            ),
        ]
        for what, response in calls:
            assert response.status_code < 400, (
                f"{what}: {response.status_code} {response.get_data(as_text=True)[:300]}"
            )
        tasks += [calls[1][1].json["id"], calls[4][1].json["task_id"]]
    return tasks


@pytest.mark.parametrize("uid", BIG)
def test_every_page_and_endpoint_answers_with_big_user_ids_stored(client, api, filled, uid):
    gets = [
        f"/users/{uid}",
        f"/users?id={uid}",
        "/users?id=" + str(uid).replace("3", " 3"),
        "/reports",
        "/",
        f"/segments/{SLUG}",
        f"/segments/{SLUG}/members?user_id={uid}",
        f"/segments/{SLUG}/members?after={uid - 1}",
        f"/segments/{SLUG}/summary",
        f"/segments/{SLUG}/recent",
        f"/segments/{SLUG}/activity",
        f"/segments/{SLUG}/reach",
        "/fragments/jobs-status",
        f"/api/v1/users/{uid}/segments",
        f"/api/v1/users/{uid}/history",
        f"/api/v1/segments/{SLUG}/members",
        f"/api/v1/segments/{SLUG}/members?after={uid - 1}",
        f"/api/v1/segments/{SLUG}/activity",
        f"/segment/user?id={uid}",
    ]
    for path in gets:
        response = client.get(path, follow_redirects=True)
        _no_500(response, path)
        assert response.status_code in (200, 204), (path, response.status_code)
    page = client.get(f"/users/{uid}").get_data(as_text=True)
    assert f"{uid}" in page or f"{uid:,}" in page
    assert "Report" in page
    for task in filled:
        for path in (
            f"/api/v1/reports/{task}",
            f"/api/v1/reports/{task}.csv",
            f"/reports/{task}/status",
            f"/reports/{task}/download",
            f"/report_check?task_id={task}",
            f"/download?id={task}",
        ):
            _no_500(client.get(path), path)
    for report in Report.query.filter(Report.id.in_([uuid.UUID(t) for t in filled])):
        rows, path = reports.write_csv(db.session, report, lambda done, total: None)
        assert path.exists()
    lookup = api.post("/users/segments:lookup", {"user_ids": [uid, 1]})
    assert lookup.status_code == 200, lookup.json
    assert [s["slug"] for s in api.active(uid)] == [SLUG]


def test_a_report_of_user_2_31_keeps_user_pages_working(client, api):
    """The audit's reproduction: one report request, then every user page answered 500."""
    month = utcnow().strftime("%Y-%m")
    response = api.post("/reports", {"user_id": 2**31, "period": month})
    assert response.status_code == 202, response.json
    for uid in (1, 2**31, 2**63 - 1):
        page = client.get(f"/users/{uid}")
        assert page.status_code == 200, (uid, page.status_code)
    assert client.get("/api/v1/reports/" + response.json["id"]).status_code == 200
