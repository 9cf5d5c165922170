"""2. Read-your-writes whatever Redis does; 3. Redis never hangs a web worker.

Each test runs the app against a redis-server of its own and breaks it for real: SIGSTOP
(connections hang), stop and restart (connections refused, then old data back from the
AOF), or ``CLIENT PAUSE 3000 ALL`` (the server answers nobody).
"""

from __future__ import annotations

import random
import time
import uuid

import pytest

from devstack.redis_server import PrivateRedis
from tests.support.checks import assert_envelope, describe, outage_limit, timed
from tests.support.processes import (
    EXCEPTION_WORDS,
    client_pause,
    pause,
    recover,
    resume,
    stopped_with_sigstop,
)

pytestmark = pytest.mark.fault

ITERATIONS = 10
PAUSE_MS = 3000


# -- 2. read-your-writes ----------------------------------------------------------------------


class Fault:
    """One way of breaking Redis around a write: ``before`` the write, ``between`` the write
    and the read that must reflect it, ``after`` that read."""

    def __init__(self, mode: str, servers: list[PrivateRedis]):
        self.mode, self.servers = mode, servers
        self.server = servers[0]
        self.paused_at: float | None = None

    def use(self, iteration: int) -> None:
        self.server = self.servers[iteration % len(self.servers)]
        self.paused_at = None

    def before(self) -> None:
        if self.mode == "sigstop":
            pause(self.server)
        elif self.mode == "stopped_then_restarted":
            self.server.stop()
            assert self.server.process.poll() is not None
        else:  # client_pause: a fresh pause unless this iteration's is still on for a whole write
            if self.paused_at is None or time.perf_counter() - self.paused_at > PAUSE_MS / 1000 - 1.0:
                self.paused_at = client_pause(self.server, PAUSE_MS)

    def between(self) -> None:
        if self.mode == "stopped_then_restarted":
            self.server.start()

    def after(self) -> None:
        if self.mode == "sigstop":
            resume(self.server)


@pytest.fixture
def redis_servers(tmp_path):
    servers: list[PrivateRedis] = []

    def start(count: int, appendonly: bool) -> list[PrivateRedis]:
        for i in range(count):
            server = PrivateRedis(tmp_path / f"redis{i}", appendonly=appendonly)
            server.dir.mkdir(parents=True, exist_ok=True)
            server.start()
            servers.append(server)
        return servers

    yield start
    for server in servers:
        resume(server)
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sigstop", "stopped_then_restarted", "client_pause"])
def test_an_acknowledged_write_is_read_back_at_once_whatever_redis_does(
    mode, app_on, committed_db, redis_servers
):
    # CLIENT PAUSE cannot be lifted early (CLIENT UNPAUSE waits for it too), so that mode
    # rotates over three servers (one app each) to fit ten 3-second pauses in ~12 s.
    servers = redis_servers(3 if mode == "client_pause" else 1, appendonly=mode == "stopped_then_restarted")
    apps = [app_on(REDIS_URL=s.url) for s in servers]
    fault = Fault(mode, servers)
    marker = servers[0].url + "#marker"
    if mode == "stopped_then_restarted":  # data written before the outage must come back with the AOF
        from redis import Redis

        Redis.from_url(servers[0].url).set("marker", marker)
    slow: list[str] = []
    _, baseline = timed(apps[0].test_client().get, "/api/v1/segments")  # Redis healthy
    limit = outage_limit(baseline)

    def call(client, method, path, label, **kwargs):
        response, seconds = timed(getattr(client, method), path, **kwargs)
        if seconds >= limit:
            slow.append(f"{label}: {method.upper()} {path} took {seconds:.2f}s")
        return response

    def write(client, method, path, label, body=None):
        fault.before()
        response = call(
            client, method, path, label, json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        fault.between()
        assert response.status_code < 300, f"{label}: the write was not acknowledged: {describe(response)}"
        return response

    rng = random.Random(mode)
    for i in range(ITERATIONS):
        fault.use(i)
        client = apps[i % len(apps)].test_client()
        slug, rollout_slug = f"RYW_{i}", f"RYW_ROLLOUT_{i}"
        user, other = 1000 + i, rng.randrange(10_000, 10**9)
        # Setup and warm reads with Redis healthy (anything cached is cached now).
        assert client.post("/api/v1/segments", json={"slug": rollout_slug}).status_code == 201
        assert client.get(f"/api/v1/users/{user}/segments").status_code == 200
        assert client.get(f"/api/v1/users/{other}/segments").status_code == 200
        assert client.get(f"/api/v1/segments/{slug}").status_code == 404

        write(client, "post", "/api/v1/segments", "create", {"slug": slug})
        read = call(client, "get", f"/api/v1/segments/{slug}", "read after create")
        fault.after()
        assert read.status_code == 200 and read.json["slug"] == slug, (
            f"iteration {i}: create not visible: {describe(read)}"
        )

        write(client, "post", f"/api/v1/users/{user}/segments", "add", {"add": [slug]})
        read = call(client, "get", f"/api/v1/users/{user}/segments", "read after add")
        fault.after()
        assert {"slug": slug, "source": "explicit", "expires_at": None} in read.json["segments"], (
            f"iteration {i}: add not visible: {describe(read)}"
        )

        write(client, "patch", f"/api/v1/segments/{rollout_slug}", "rollout", {"rollout_percent": 100})
        read = call(client, "get", f"/api/v1/users/{other}/segments", "read after rollout")
        fault.after()
        assert {"slug": rollout_slug, "source": "rollout", "expires_at": None} in read.json["segments"], (
            f"iteration {i}: rollout 100% not visible for user {other}: {describe(read)}"
        )

        write(client, "delete", f"/api/v1/segments/{slug}", "delete")
        read = call(client, "get", f"/api/v1/users/{user}/segments", "read after delete")
        fault.after()
        assert slug not in {s["slug"] for s in read.json["segments"]}, (
            f"iteration {i}: delete not visible: {describe(read)}"
        )
        assert client.get(f"/api/v1/segments/{slug}").status_code == 404

    if mode == "stopped_then_restarted":
        from redis import Redis

        assert Redis.from_url(servers[0].url).get("marker") == marker.encode(), (
            "the AOF did not bring data back"
        )
    assert slow == [], slow


# -- 3. Redis never hangs a web worker --------------------------------------------------------


@pytest.fixture
def hung_app(app_on, private_redis, committed_db, tmp_path):
    """The app on its own Redis, rate limits on as in production, with a segment HANG that
    user 77 is in; one warm request per kind made while Redis was healthy."""
    app = app_on(
        REDIS_URL=private_redis.url,
        REPORTS_DIR=str(tmp_path / "reports"),
        RATELIMIT_ENABLED=True,
        RATELIMIT_WRITE="300/minute",
        RATELIMIT_REPORTS="20/minute",
    )
    client = app.test_client()
    assert client.post("/api/v1/segments", json={"slug": "HANG"}).status_code == 201
    assert client.post("/api/v1/segments", json={"slug": "HANG_B"}).status_code == 201
    assert client.post("/api/v1/users/77/segments", json={"add": ["HANG"]}).status_code == 200
    assert client.get("/readyz").status_code == 200  # a live pooled connection to hang on
    return app


CASES = [
    ("healthz", "get", "/healthz", None),
    ("readyz", "get", "/readyz", None),
    ("dashboard_index", "get", "/", None),
    ("dashboard_segment", "get", "/segments/HANG", None),
    ("dashboard_user", "get", "/users/77", None),
    ("dashboard_reports", "get", "/reports", None),
    ("dashboard_jobs_status", "get", "/fragments/jobs-status", None),
    ("api_user_segments", "get", "/api/v1/users/77/segments", None),
    ("api_change_user_segments", "post", "/api/v1/users/77/segments", {"add": ["HANG_B"]}),
]


@pytest.mark.parametrize(("name", "method", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_a_sigstopped_redis_never_hangs_a_request(name, method, path, body, hung_app, private_redis):
    client = hung_app.test_client()
    kwargs = {"json": body, "headers": {"Idempotency-Key": str(uuid.uuid4())}} if body is not None else {}
    _, baseline = timed(getattr(client, method), path, **kwargs)  # warm (Redis healthy)
    if body is not None:
        kwargs["headers"] = {"Idempotency-Key": str(uuid.uuid4())}
    with stopped_with_sigstop(private_redis):
        response, seconds = timed(getattr(client, method), path, **kwargs)
        again, seconds_again = timed(
            getattr(client, method), path, **kwargs
        )  # (an open breaker, a fallback...)
    limit = outage_limit(baseline)
    assert seconds < limit and seconds_again < limit, (
        f"{path}: {seconds:.2f}s then {seconds_again:.2f}s ({baseline:.3f}s with Redis healthy)"
    )
    text = response.get_data(as_text=True)
    if name == "readyz":
        assert response.status_code == 503, describe(response)
        checks = response.json["checks"]
        assert checks["redis"]["ok"] is False and checks["database"]["ok"] is True, text
        assert not [w for w in EXCEPTION_WORDS if w.lower() in text.lower()], f"exception text leaked: {text}"
        return
    assert response.status_code < 500, describe(response)
    assert again.status_code < 500, describe(again)
    if name == "api_user_segments":
        assert [s["slug"] for s in response.json["segments"]] == ["HANG"]
    if name == "api_change_user_segments":
        assert response.status_code == 200, describe(response)
        assert {s["slug"] for s in response.json["segments"]} == {"HANG", "HANG_B"}


def test_a_report_requested_while_redis_is_sigstopped_is_refused_or_finishes(hung_app, private_redis):

    client = hung_app.test_client()
    _, baseline = timed(client.get, "/api/v1/segments")  # Redis healthy
    with stopped_with_sigstop(private_redis):
        response, seconds = timed(
            client.post, "/api/v1/reports", json={"kind": "segment_members", "segment": "HANG"}
        )
    assert seconds < outage_limit(baseline), f"POST /api/v1/reports took {seconds:.2f}s with Redis stopped"
    if response.status_code == 503:
        assert_envelope(response)
        return
    assert response.status_code == 202, describe(response)
    state = recover(hung_app, response.json["id"])  # Redis is back (SIGCONT)
    assert state["status"] == "finished", state
    assert state["rows"] == 1
