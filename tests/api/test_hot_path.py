"""The hot reads answered in front of Flask (webapp/hot_path.py): the same answers, and
everything but the plain success path still goes through Flask."""

import json

import pytest

from webapp.api.hot_routes import HOT_ROUTES
from webapp.services.reads.path import Reader

TOKENS = "svc:token-0123456789abcdef"
AUTH = {"Authorization": "Bearer token-0123456789abcdef"}


@pytest.fixture
def hot(app_on, redis_app, committed_db):
    """An app whose requests reach the hot path (committed data, no test-bound session)."""
    app = app_on()
    client = app.test_client()
    client.post("/api/v1/segments", json={"slug": "HOT_A"})
    client.post("/api/v1/segments", json={"slug": "HOT_B", "rollout_percent": 100})
    client.post("/api/v1/users/7/segments", json={"add": [{"slug": "HOT_A", "ttl_seconds": 3600}]})
    return app


def request_lines(capfd) -> list[dict]:
    """The request log's lines this test wrote to stderr (the default REQUEST_LOG)."""
    return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith('{"time": ')]


def test_the_answer_and_headers(hot, capfd):
    capfd.readouterr()
    response = hot.test_client().get("/api/v1/users/7/segments", headers={"X-Request-ID": "hot-1"})
    body = response.json
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert [(s["slug"], s["source"]) for s in body["segments"]] == [
        ("HOT_A", "explicit"),
        ("HOT_B", "rollout"),
    ]
    assert body["user_id"] == 7 and body["segments"][0]["expires_at"].endswith("Z")
    assert body["segments"][1]["expires_at"] is None
    assert (
        response.headers["X-Request-ID"] == "hot-1"
        and "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    )
    assert response.headers["Content-Length"] == str(len(response.data))
    [line] = request_lines(capfd)
    assert (line["request_id"], line["status"], line["path"]) == ("hot-1", 200, "/api/v1/users/7/segments")


def test_compat_answers_and_204(hot):
    client = hot.test_client()
    assert client.get("/segment/user?id=7").json == {
        "user_id": 7,
        "segments": [{"slug": "HOT_A"}, {"slug": "HOT_B"}],
    }
    client.patch("/api/v1/segments/HOT_B", json={"rollout_percent": 0})
    empty = client.get("/segment/user?id=8")
    assert empty.status_code == 204 and empty.data == b""


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/v1/users/0/segments", 422),
        ("/api/v1/users/abc/segments", 422),
        (f"/api/v1/users/{2**63}/segments", 422),
        ("/segment/user?id=", 400),
        ("/segment/user?id=5&x=1", 200),
    ],
)  # (Flask: an extra parameter)
def test_anything_else_is_flasks_answer(hot, path, status):
    response = hot.test_client().get(path)
    assert response.status_code == status
    if status >= 400:
        assert set(response.json["error"]) == {"code", "message", "details"}


def test_tokens_and_limits_are_flasks(app_on, redis_app, committed_db, capfd):
    client = app_on(API_TOKENS=TOKENS).test_client()
    assert client.get("/api/v1/users/7/segments").status_code == 401  # refused by Flask's hook
    assert client.get("/api/v1/users/7/segments", headers=AUTH).status_code == 200
    assert request_lines(capfd)[-1]["client"] == "svc"
    limited = app_on(RATELIMIT_ENABLED=True, RATELIMIT_HOT_PATH="2/hour").test_client()
    assert [limited.get("/api/v1/users/7/segments").status_code for _ in range(3)] == [200, 200, 429]
    # the limiter's 429 ends the request before the request-id hook: it still gets and logs one
    capfd.readouterr()
    refused = limited.get("/api/v1/users/7/segments", headers={"X-Request-ID": "late-1"})
    assert refused.status_code == 429 and refused.headers["X-Request-ID"] == "late-1"
    assert len(limited.get("/api/v1/users/7/segments").headers["X-Request-ID"]) == 32
    assert [(line["request_id"], line["status"]) for line in request_lines(capfd)][0] == ("late-1", 429)


def test_a_failing_read_is_answered_by_flask_with_the_envelope(hot, monkeypatch):
    class Broken(Reader):
        def segments(self, user_id, now=None, token=None):
            raise RuntimeError("database unreachable")

    monkeypatch.setitem(hot.extensions, "reader", Broken(hot.extensions["read_engine"]))
    response = hot.test_client().get("/api/v1/users/7/segments")
    assert response.status_code == 500 and response.json["error"]["code"] == "internal_error"


def test_a_connection_the_server_dropped_is_replaced_and_the_read_retried(hot):
    """The read's connection killed by the server between two requests (a restart, an idle
    timeout, an operator): the next read replaces it, prepares its statement there again and
    answers; nothing reaches the client."""
    import time

    import sqlalchemy as sa

    from webapp.platform.extensions import db

    client = hot.test_client()
    client.post("/api/v1/segments", json={"slug": "DROPPED", "rollout_percent": 100})
    client.post("/api/v1/segments", json={"slug": "EXPLICIT_DROP"})
    client.post("/api/v1/users/5/segments", json={"add": [{"slug": "EXPLICIT_DROP", "ttl_seconds": 60}]})
    before = client.get("/api/v1/users/5/segments").json
    assert {"DROPPED", "EXPLICIT_DROP"} <= {s["slug"] for s in before["segments"]}
    with hot.app_context():
        engine = hot.extensions["read_engine"]
        for _ in range(3):
            raw = engine.raw_connection()
            pid = raw.driver_connection.info.backend_pid
            raw.close()
            # Autocommit: within one transaction pg_stat_activity is a snapshot, and a backend
            # still there at the first look would be there forever (this hung CI for good).
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                assert conn.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                deadline = time.monotonic() + 10
                while conn.scalar(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ):
                    assert time.monotonic() < deadline, (
                        f"backend {pid} still there 10 s after pg_terminate_backend"
                    )
                    time.sleep(0.01)
            response = client.get("/api/v1/users/5/segments")
            assert response.status_code == 200 and response.json == before


def test_a_statement_deallocated_behind_the_reads_back_is_prepared_again(hot):
    """DEALLOCATE ALL on the read's connection (an operator, a pooler that resets sessions):
    the next read prepares its statement again and answers; a second prepare is harmless."""
    client = hot.test_client()
    before = client.get("/api/v1/users/5/segments").json
    with hot.app_context():
        raw = hot.extensions["read_engine"].raw_connection()
        try:
            raw.driver_connection.execute("DEALLOCATE ALL")
        finally:
            raw.close()
        assert client.get("/api/v1/users/5/segments").json == before
        raw = hot.extensions["read_engine"].raw_connection()
        try:
            raw.info.clear()  # the pool forgets; the server still has it
        finally:
            raw.close()
        assert client.get("/api/v1/users/5/segments").json == before


def test_other_threads_run_while_a_read_waits_for_the_database(hot):
    """The read waits for its statement without holding the GIL, so a threaded worker's
    (GUNICORN_THREADS) other requests go on meanwhile. The statement is held up by a lock
    on catalog_version, then let through: the read answers as before."""
    import threading
    import time

    import sqlalchemy as sa

    from webapp.platform.extensions import db

    client = hot.test_client()
    expected = client.get("/api/v1/users/7/segments").json

    def spin(seconds: float) -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            count += 1
        return count

    alone = spin(0.3)
    answers = []
    with hot.app_context(), db.engine.connect() as locker:
        # (the server ends the lock's session after 3 s idle: a wait holding the GIL would
        # otherwise stall this thread, and the test, for good)
        locker.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = '3s'"))
        locker.execute(sa.text("LOCK TABLE catalog_version IN ACCESS EXCLUSIVE MODE"))
        reader = threading.Thread(
            target=lambda: answers.append(client.get("/api/v1/users/7/segments")), daemon=True
        )
        reader.start()
        deadline = time.monotonic() + 10
        while not locker.scalar(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE relation = 'catalog_version'::regclass "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND NOT granted"
            )
        ):
            assert time.monotonic() < deadline, "the read never reached the lock"
            time.sleep(0.01)
        meanwhile = spin(0.3)
        assert reader.is_alive() and not answers
        locker.rollback()
    reader.join(10)
    assert not reader.is_alive(), "the read did not answer within 10 s of the lock's release"
    assert answers[0].status_code == 200 and answers[0].json == expected
    assert meanwhile > alone * 0.2, (meanwhile, alone)  # (a wait holding the GIL leaves about 0)


@pytest.mark.parametrize("route", HOT_ROUTES, ids=lambda route: route.endpoint)
def test_the_layer_and_flask_answer_through_one_reader(app, api, monkeypatch, route):
    """One route constant: Flask routes its URL to its endpoint and the layer in front of Flask
    takes the same URL. One entry point: both answer by the app's reader (here the test's,
    reading in its transaction), with the same bytes."""
    from flask import request_started

    from webapp.http.hot_path import HotPath

    path, _, query = route.url(5).partition("?")
    assert app.url_map.bind("localhost").match(path, "GET", query_args=query)[0] == route.endpoint
    assert route.user_id(path, query) == "5"
    api.segment("ONE_PATH")
    api.change(5, ["ONE_PATH"])
    reader, calls, flask_requests = app.extensions["reader"], [], []

    def answer(user_id, *, compat=False, token=None):
        calls.append((user_id, compat, token))
        return type(reader).answer(reader, user_id, compat=compat, token=token)

    monkeypatch.setattr(reader, "answer", answer)
    token = {"Segments-Consistency": "0/16B3748"}  # (the read's token reaches the reader either way)
    with request_started.connected_to(lambda sender, **extra: flask_requests.append(1), app):
        in_front = api.client.get(route.url(5), headers=token)
        assert not flask_requests  # answered in front of Flask
        monkeypatch.setattr(HotPath, "_answer", lambda self, environ: None)  # the layer steps aside
        by_flask = api.client.get(route.url(5), headers=token)
        assert flask_requests == [1]
    assert calls == [(5, route.compat, "0/16B3748")] * 2
    assert in_front.status_code == by_flask.status_code == 200
    assert in_front.data == by_flask.data and b'"ONE_PATH"' in in_front.data
    assert in_front.headers["Content-Type"] == by_flask.headers["Content-Type"] == "application/json"


def test_replicas_behind_in_front_of_flask_is_answered_without_reading_again(hot, monkeypatch):
    """A read the layer in front of Flask made that found the replicas behind and the fallbacks
    to the primary full (503 ``replicas_behind``, after waiting a second for a slot) is answered
    by Flask as it stands: Flask does not read again (a second wait, a second fallback counted)."""
    from webapp.errors import ReplicasBehind

    calls = []

    class Behind(Reader):
        def view(self, user_id, now=None, token=None):
            calls.append(user_id)
            raise ReplicasBehind()

    monkeypatch.setitem(hot.extensions, "reader", Behind(hot.extensions["read_engine"]))
    client = hot.test_client()
    response = client.get("/api/v1/users/7/segments", headers={"Segments-Consistency": "0/1"})
    assert response.status_code == 503 and response.json["error"]["code"] == "replicas_behind"
    assert response.headers["Retry-After"] == "1" and calls == [7]
    flag = client.post("/ofrep/v1/evaluate/flags/HOT_A", json={"context": {"targetingKey": "7"}})
    assert flag.status_code == 503 and flag.json["errorCode"] == "GENERAL" and calls == [7, 7]
    assert flag.headers["Retry-After"] == "1"
