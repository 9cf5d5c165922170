"""Scoped API tokens: read, reports, write (and a scope-less entry, which is write), on /api/v1 and
the seed's routes, the hot path included; malformed scopes refuse to start."""

import pytest

from tests.support.checks import AUTH, TOKENS
from webapp import create_app
from webapp.http.auth import GRANTS, READ, REPORTS, WRITE, parse_tokens, required_scope
from webapp.jobs.worker import run_worker

MAY = {
    "read": {READ},
    "reports": {READ, REPORTS},
    "write": {READ, REPORTS, WRITE},
    "legacy": {READ, REPORTS, WRITE},
}
SCOPES = list(AUTH)


@pytest.fixture
def scoped(app_on, redis_app, committed_db):
    """An app with the four tokens, a segment and a member, committed (the hot path answers)."""
    app = app_on(API_TOKENS=TOKENS)
    client = app.test_client()
    assert client.post("/api/v1/segments", json={"slug": "SCOPED"}, headers=AUTH["write"]).status_code == 201
    assert (
        client.post("/api/v1/users/5/segments", json={"add": ["SCOPED"]}, headers=AUTH["write"]).status_code
        == 200
    )
    return app


def assert_forbidden(response, scope, needed):
    assert response.status_code == 403, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "forbidden"
    assert error["details"][0]["scope"] == scope and error["details"][0]["required"] == needed
    assert needed in error["message"]


def test_config_syntax():
    tokens = parse_tokens(
        "a:token-a-0123456789abcdef, b:token-b-0123456789abcdef:read,c:to:ken-c-0123456789abcdef:reports"
    )
    assert tokens == {
        "token-a-0123456789abcdef": "a",
        "token-b-0123456789abcdef": "b",
        "to:ken-c-0123456789abcdef": "c",
    }  # (the name table the hot path uses is unchanged)
    assert tokens.scopes == {
        "token-a-0123456789abcdef": WRITE,
        "token-b-0123456789abcdef": READ,
        "to:ken-c-0123456789abcdef": REPORTS,
    }


@pytest.mark.parametrize(
    "raw, words",
    [
        ("svc:token-a-0123456789abcdef:raed", "'raed' is not a scope"),
        ("svc:token-a-0123456789abcdef:", "'' is not a scope"),
        ("svc:token-a-0123456789abcdef:READ", "'READ' is not a scope"),
        # a token containing ':' needs its scope, and the message shows no part of the token
        ("svc:tok:en-a-0123456789abcdef", "the part after its last ':' is not a scope"),
        ("svc:short:read", "entry 1 is not name:token"),
        ("ok:token-a-0123456789abcdef,svc::write", "entry 2 is not name:token"),
    ],
)
def test_a_bad_scope_refuses_to_start(app, raw, words):
    with pytest.raises(ValueError, match="API_TOKENS entry") as caught:
        create_app({**app.config, "TESTING": False, "API_TOKENS": raw})
    assert words in str(caught.value)


def test_the_rule():
    def view():
        pass

    assert required_scope(view, "GET") == READ and required_scope(view, "HEAD") == READ
    assert {required_scope(view, m) for m in ("POST", "PUT", "PATCH", "DELETE")} == {WRITE}
    assert required_scope(None, "GET") == READ and required_scope(None, "POST") == WRITE
    view.required_scope = READ  # type: ignore[attr-defined]
    assert required_scope(view, "POST") == READ
    assert GRANTS[WRITE] >= GRANTS[REPORTS] >= GRANTS[READ]


@pytest.mark.parametrize("scope", SCOPES)
def test_reads_are_every_scopes(scoped, scope):
    client = scoped.test_client()
    for path in (
        "/api/v1/segments",
        "/api/v1/segments/SCOPED",
        "/api/v1/segments/SCOPED/members",
        "/api/v1/users/5/history",
        "/segment/user?id=5",
    ):
        assert client.get(path, headers=AUTH[scope]).status_code == 200, path
    # the hot path (answered in front of Flask) too
    assert client.get("/api/v1/users/5/segments", headers=AUTH[scope]).json["segments"][0]["slug"] == "SCOPED"


@pytest.mark.parametrize("scope", SCOPES)
def test_writes_need_write(scoped, scope):
    client = scoped.test_client()
    writes = [
        ("post", "/api/v1/segments", {"slug": f"NEW_{scope.upper()}"}),
        ("patch", "/api/v1/segments/SCOPED", {"description": scope}),
        ("post", "/api/v1/users/6/segments", {"add": ["SCOPED"]}),
        ("post", "/api/v1/segments/SCOPED/members", {"user_ids": [7, 8]}),
        ("post", "/segment", {"slug": f"SEED_{scope.upper()}"}),
        ("post", "/segment/user", {"user_id": 9, "add": ["SCOPED"], "del": []}),
        ("delete", "/segment", {"slug": "SCOPED"}),
    ]
    for method, path, body in writes:
        response = getattr(client, method)(path, json=body, headers=AUTH[scope])
        if WRITE in MAY[scope]:
            assert response.status_code == 200 or response.status_code == 201, (path, response.json)
        else:
            assert_forbidden(response, scope, WRITE)
    gone = client.get("/api/v1/segments/SCOPED", headers=AUTH[scope]).status_code
    assert gone == (404 if WRITE in MAY[scope] else 200)  # a refused delete changed nothing


@pytest.mark.parametrize("scope", SCOPES)
def test_reports_need_reports_or_write(scoped, redis_app, scope):
    client = scoped.test_client()
    v1 = client.post("/api/v1/reports", json={"user_id": 5, "period": "2024-01"}, headers=AUTH[scope])
    seed = client.get("/report?date=2023-08-29%2010:32", headers=AUTH[scope])
    if REPORTS not in MAY[scope]:
        assert_forbidden(v1, scope, REPORTS)
        assert_forbidden(seed, scope, REPORTS)
        # reading one requested by a write token is refused for the scope (before ownership)
        report = client.post(
            "/api/v1/reports", json={"user_id": 5, "period": "2024-01"}, headers=AUTH["write"]
        ).json
        for path in (
            f"/api/v1/reports/{report['id']}",
            f"/api/v1/reports/{report['id']}.csv",
            f"/report_check?task_id={report['id']}",
            f"/download?id={report['id']}",
        ):
            assert_forbidden(client.get(path, headers=AUTH[scope]), scope, REPORTS)
        return
    assert v1.status_code == 202 and seed.status_code == 200
    run_worker(redis_app, burst=True, fork=False)
    report, task = v1.json["id"], seed.json["task_id"]
    assert client.get(f"/api/v1/reports/{report}", headers=AUTH[scope]).json["status"] == "finished"
    download = client.get(f"/api/v1/reports/{report}.csv", headers=AUTH[scope])
    assert download.status_code == 200 and download.data.startswith(b"user_id;segment;operation;timestamp")
    link = client.get(f"/report_check?task_id={task}", headers=AUTH[scope]).json["link_to_file"]
    assert client.get(link, headers=AUTH[scope]).status_code == 200


def test_a_read_only_post_is_a_read(scoped):
    """A view marked @requires_scope(READ) (the batch lookup) is open to read tokens."""
    client = scoped.test_client()
    for scope in SCOPES:
        response = client.post(
            "/api/v1/users/segments:lookup", json={"user_ids": [5, 6]}, headers=AUTH[scope]
        )
        assert response.status_code == 200, (scope, response.json)


def test_unknown_and_missing_tokens_are_still_401(scoped):
    client = scoped.test_client()
    assert client.post("/api/v1/segments", json={"slug": "X"}).status_code == 401
    bad = client.post(
        "/api/v1/segments", json={"slug": "X"}, headers={"Authorization": "Bearer nope-0123456789abcdef"}
    )
    assert bad.status_code == 401 and bad.json["error"]["code"] == "unauthorized"


def test_history_names_the_token(scoped):
    client = scoped.test_client()
    assert (
        client.post("/api/v1/users/11/segments", json={"add": ["SCOPED"]}, headers=AUTH["legacy"]).status_code
        == 200
    )
    items = client.get("/api/v1/users/11/history", headers=AUTH["read"]).json["items"]
    assert [i["actor"] for i in items] == ["legacy"]
