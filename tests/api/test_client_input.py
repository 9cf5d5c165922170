"""7. No 500 from client input: hostile query strings, NUL bytes, deep JSON, far dates, odd slugs.

The API must refuse each with a 4xx and the JSON envelope (the seed-compatible routes answer
400 for every invalid request, by their contract, so there "4xx" is asked, not 422), and
write nothing. The dashboard must refuse the invalid submissions (4xx, a plain page or an
htmx fragment, nothing written); for junk in a page's query string (a page number in
other digits, a NUL in a search) it must answer a plain page (or a redirect to one),
never a 5xx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.checks import assert_envelope, assert_plain_page, describe, snapshot

pytestmark = pytest.mark.fault

DEEP = "[" * 100_000
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    json: Any = None
    raw: str | None = None
    form: dict | None = None
    expect: str = "4xx"  # "4xx", "422", or "page" (dashboard: any non-5xx plain page)
    newline_slug: bool = False
    marks: tuple = field(default_factory=tuple)


API = [
    Case("page_superscript_two", "get", "/api/v1/segments?page=%C2%B2"),
    Case("per_page_arabic_three", "get", "/api/v1/segments?per_page=%D9%A3"),
    Case("nul_in_q", "get", "/api/v1/segments?q=IN%00PUT"),
    Case(
        "nul_in_description_create",
        "post",
        "/api/v1/segments",
        json={"slug": "NULDESC", "description": "a\x00b"},
    ),
    Case("nul_in_description_patch", "patch", "/api/v1/segments/INPUT", json={"description": "a\x00b"}),
    Case("deeply_nested_json_create_segment", "post", "/api/v1/segments", raw=DEEP),
    Case("deeply_nested_json_change_user", "post", "/api/v1/users/1/segments", raw=DEEP),
    Case("deeply_nested_json_compat_change_user", "post", "/segment/user", raw=DEEP),
    Case(
        "report_period_9999_12", "post", "/api/v1/reports", json={"kind": "all_history", "period": "9999-12"}
    ),
    Case("compat_report_date_9999_12", "get", "/report?date=9999-12"),
    Case("history_from_year_1_plus_14", "get", "/api/v1/users/1/history?from=0001-01-01T00:00:00+14:00"),
    Case(
        "history_from_year_1_plus_14_encoded",
        "get",
        "/api/v1/users/1/history?from=0001-01-01T00:00:00%2B14:00",
    ),
    Case(
        "report_from_year_1_plus_14",
        "post",
        "/api/v1/reports",
        json={"kind": "all_history", "from": "0001-01-01T00:00:00+14:00", "to": "2026-01-01"},
    ),
    Case(
        "slug_with_newline",
        "post",
        "/api/v1/segments",
        json={"slug": "NEWLINE\n"},
        expect="422",
        newline_slug=True,
    ),
    Case(
        "slug_with_newline_in_add",
        "post",
        "/api/v1/users/1/segments",
        json={"add": ["NEWLINE\n"]},
        expect="422",
        newline_slug=True,
    ),
    Case("slug_with_newline_in_path", "get", "/api/v1/segments/NEWLINE%0A", newline_slug=True),
    Case("compat_slug_with_newline", "post", "/segment", json={"slug": "NEWLINE\n"}, newline_slug=True),
]
DASHBOARD = [
    Case("dashboard_page_superscript_two", "get", "/?page=%C2%B2", expect="page"),
    Case("dashboard_nul_in_q", "get", "/?q=IN%00PUT", expect="page"),
    Case(
        "dashboard_members_slug_and_method_override",
        "get",
        "/segments/INPUT/members?slug=X&_method=DELETE",
        expect="page",
    ),
    Case(
        "dashboard_nul_in_description_create",
        "post",
        "/segments",
        form={"slug": "NULFORM", "description": "a\x00b"},
    ),
    Case(
        "dashboard_nul_in_description_settings",
        "post",
        "/segments/INPUT/settings",
        form={"description": "a\x00b", "rollout_percent": ""},
    ),
    Case(
        "dashboard_report_period_9999_12",
        "post",
        "/reports",
        form={"kind": "all_history", "period": "9999-12"},
    ),
    # A form field is trimmed (a pasted "NEWLINE\n" means NEWLINE), so this one is the existing
    # segment: a 409 conflict, and never a second segment beside it.
    Case("dashboard_slug_with_newline", "post", "/segments", form={"slug": "NEWLINE\n"}, newline_slug=True),
]


@pytest.fixture
def hostile(redis_app, committed_db):
    client = redis_app.test_client()
    for slug in ("INPUT", "NEWLINE"):
        assert client.post("/api/v1/segments", json={"slug": slug, "description": "kept"}).status_code == 201
    assert client.post("/api/v1/users/1/segments", json={"add": ["INPUT"]}).status_code == 200
    return redis_app


def newline_segments(app) -> list[str]:
    from webapp.platform.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("SELECT slug FROM segments WHERE slug LIKE 'NEWLINE%' AND deleted_at IS NULL")
            )
        )


def send(client, case: Case, headers: dict | None = None):
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if case.json is not None:
        kwargs["json"] = case.json
    elif case.raw is not None:
        kwargs.update(data=case.raw, content_type="application/json")
    elif case.form is not None:
        kwargs["data"] = case.form
    return getattr(client, case.method)(case.path, **kwargs)


def check_refused(response, case: Case) -> None:
    assert response.status_code < 500, describe(response)
    if case.expect == "422":
        assert response.status_code == 422, describe(response)
    else:
        assert 400 <= response.status_code < 500, describe(response)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in API])
def test_api_refuses_hostile_input_with_a_4xx_envelope_and_writes_nothing(case, hostile):
    client = hostile.test_client()
    before = snapshot(hostile)
    response = send(client, case)
    check_refused(response, case)
    assert_envelope(response)
    assert snapshot(hostile) == before, "the refused request changed the database"
    if case.newline_slug:
        assert newline_segments(hostile) == ["NEWLINE"]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in DASHBOARD])
def test_dashboard_answers_hostile_input_with_a_plain_page_and_writes_nothing(case, hostile):
    client = hostile.test_client()
    page = client.get("/").get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, "no CSRF token on the dashboard"
    headers = (
        {"HX-Request": "true", "X-CSRFToken": match.group(1) or match.group(2)}
        if case.method == "post"
        else {}
    )
    before = snapshot(hostile)
    response = send(client, case, headers)
    if case.expect == "page":
        assert_plain_page(response)
        # (and no method override: GET stays GET, the segment is still there)
    else:
        check_refused(response, case)
        assert response.mimetype == "text/html" and "Traceback" not in response.get_data(as_text=True), (
            describe(response)
        )
    assert snapshot(hostile) == before, "the request changed the database"
    if case.newline_slug:
        assert newline_segments(hostile) == ["NEWLINE"]
