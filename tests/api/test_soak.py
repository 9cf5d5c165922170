"""The soak (issue 22): the whole stack for ``SOAK_SECONDS`` under traffic and faults together.

Real processes — gunicorn (``gunicorn.conf.py``), ``flask worker`` (``JOB_ORPHAN_SECONDS=5``) and
``flask scheduler`` (1 s interval) — on this run's PostgreSQL database and a private Redis
(append-only, as in docker-compose). During the run, at once:

- the history oracle's writers (tests/support/oracle.py: 40 users, several threads, its whole mix:
  changes with TTLs, swaps, rollouts, groups, scheduled changes coming due, small bulk
  operations, deletion and re-creation), for the whole duration;
- background bulk operations (12,000 ids each, add / remove / replace, on a segment of their
  own, ids from 100,000 up), one after another;
- CSV reports (everyone's history for a period, a user's month);
- the rollouts job every 5 s and the TTL purge every 20 s, queued for the real worker;
- faults on a schedule: ``kill -9`` of the worker and all its children while a 200,000-id bulk
  add runs (then a fresh worker), Redis stopped for 20 s and started again, every backend of
  the app's database ended by ``pg_terminate_backend`` several times.

The client does what the README tells clients to (*Retrying writes*): every write carries an
``Idempotency-Key`` of its own, and is sent again with the same key after a 503
``database_unavailable``/``database_busy`` (after ``Retry-After``), a 500 ``outcome_unknown``,
a 409 ``idempotency_in_progress`` or a lost connection, for up to 60 s. Any other 5xx is a
problem. Afterwards: every bulk operation and report finished exactly once (counts equal the
ids, the segment's members equal what the operations imply, its history has no doubled entry,
none pending), and the oracle's check (read == lookup == history replay == CSV report == the
seed's download for every user) is exact. A summary is printed; any problem fails the test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from devstack.net import free_port
from devstack.redis_server import PrivateRedis, direct_client
from tests.support import oracle
from tests.support.processes import end_process_tree, worker_env

SECONDS = float(os.environ.get("SOAK_SECONDS") or 0)
pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not SECONDS, reason="the soak runs with SOAK_SECONDS set: make soak"),
]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SOAK_SEED", "22"))
WRITERS = 6
PATIENCE = 60.0  # seconds a request is retried (Redis or the database may be away)
BULK_SLUG, KILL_SLUG = "SOAK_BULK", "SOAK_KILL"
BULK_BASE, BULK_IDS, BULK_STEP = 100_000, 12_000, 6_000  # each operation overlaps the one before by half
KILL_BASE, KILL_IDS = 5_000_000, 200_000
REDIS_DOWN = 20.0
PENDING = ("queued", "running")
# (fraction of the run, fault): backends ended six times, the worker killed twice, Redis stopped once
FAULTS = [
    (0.06, "postgres"),
    (0.15, "worker"),
    (0.27, "postgres"),
    (0.38, "redis"),
    (0.55, "postgres"),
    (0.66, "worker"),
    (0.76, "postgres"),
    (0.86, "postgres"),
    (0.93, "postgres"),
]


# -- the client ---------------------------------------------------------------------------------


@dataclass
class Stats:
    requests: int = 0  # logical requests (each with its retries)
    attempts: Counter[str] = field(default_factory=Counter)  # every attempt, by status (and code)
    retries: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    figures: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, counter: str, key: str, n: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[key] += n

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(f"{datetime.now(UTC).isoformat()} {text}")


class Http:
    """The oracle's transport over HTTP, retrying as the README says; ``send`` also says whether
    an attempt's outcome was unknown (the change may have been made more than once)."""

    def __init__(self, port: int, stats: Stats) -> None:
        self.port, self.stats = port, stats

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, answer, _ = self.send(method, path, body)
        return status, answer

    def send(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any, bool]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Host": "127.0.0.1", "Connection": "close"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        self.stats.count("figures", "requests")
        give_up, delay, unknown = time.monotonic() + PATIENCE, 0.2, False
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                try:
                    conn.request(method, path, body=payload, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                self.stats.count("attempts", "connection error")
                unknown = unknown or method != "GET"
                if time.monotonic() > give_up:
                    self.stats.problem(f"{method} {path}: no answer for {PATIENCE:.0f} s ({exc!r})")
                    return 0, repr(exc), unknown
                self.stats.count("retries", "connection error")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            status = response.status
            json_body = (response.getheader("Content-Type") or "").startswith("application/json")
            answer: Any = json.loads(data) if json_body and data else data
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            wait: float | None = None
            if status == 503 and code in ("database_unavailable", "database_busy"):
                wait = min(float(response.getheader("Retry-After") or 1), 5.0)
            elif status == 500 and code == "outcome_unknown":
                wait, unknown = 0.2, True
            elif status == 409 and code == "idempotency_in_progress":
                wait = 0.2
            self.stats.count(
                "attempts", f"{status} {code}" if wait is not None or status >= 500 else str(status)
            )
            if wait is None:
                if status >= 500:
                    self.stats.problem(f"{method} {path} {json.dumps(body)[:200]} -> {status} {data[:500]!r}")
                return status, answer, unknown
            if time.monotonic() + wait > give_up:
                self.stats.problem(f"{method} {path}: still {status} {code} after {PATIENCE:.0f} s")
                return status, answer, unknown
            self.stats.count("retries", f"{status} {code}")
            time.sleep(wait)


# -- the processes ------------------------------------------------------------------------------


class Stack:
    """gunicorn, one worker and the scheduler; a process that exits on its own is a problem
    and is started again (as a supervisor would)."""

    def __init__(self, env: dict[str, str], logs: Path, stats: Stats) -> None:
        self.env, self.logs, self.stats = env, logs, stats
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.killing = False
        self.redis_away, self.redis_back = False, 0.0

    COMMANDS = {
        "gunicorn": ["-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        "worker": ["-m", "flask", "worker"],
        "scheduler": ["-m", "flask", "scheduler"],
    }

    def start(self, name: str) -> None:
        env = {**self.env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        with open(self.logs / f"{name}.log", "ab") as log:
            log.write(f"\n=== {datetime.now(UTC).isoformat()} start {name}\n".encode())
            log.flush()
            self.procs[name] = subprocess.Popen(
                [sys.executable, *self.COMMANDS[name]],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=name == "worker",  # its strays (RQ's scheduler child) can be found
            )

    def watch(self) -> None:
        with self.lock:
            if self.killing:
                return
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    # `flask worker` waits for Redis instead of quitting (it used to quit when Redis
                    # went away, and at start while it was away): any exit is a problem, Redis away
                    # or not; started again, as compose's restart policy would.
                    away = self.redis_away or time.monotonic() - self.redis_back < 10
                    if name == "worker" and away:
                        self.stats.count("figures", "worker exits while Redis was away (started again)")
                    self.stats.problem(f"{name} exited on its own with code {proc.returncode}: started again")
                    self.stats.count("figures", f"{name} restarts")
                    self.start(name)

    def kill_worker(self) -> int:
        """``kill -9`` of the worker and every process it started; a fresh worker after."""
        with self.lock:
            proc = self.procs["worker"]
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for member in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.send_signal(signal.SIGKILL)
            psutil.wait_procs(family, timeout=10)
            proc.wait(10)
            self.start("worker")
            return len(family)

    def stop(self) -> None:
        with self.lock:
            self.killing = True
            for name in ("worker", "scheduler", "gunicorn"):
                proc = self.procs.get(name)
                if proc is not None:
                    end_process_tree(proc)


def answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# -- bulk operations and reports ----------------------------------------------------------------


@dataclass
class Operation:
    kind: str  # add, remove, replace
    slug: str
    ids: range
    expected: dict[str, int]
    id: str | None = None
    unknown: bool = False  # an attempt's outcome was unknown: the server may hold a twin
    result: dict[str, Any] | None = None


class Bulk:
    """One background bulk operation after another on BULK_SLUG (and the fault's big adds on
    KILL_SLUG), each checked against a model of the members."""

    def __init__(self, http: Http, stats: Stats, engine: sa.Engine) -> None:
        self.http, self.stats, self.engine = http, stats, engine
        self.members: dict[str, set[int]] = {BULK_SLUG: set(), KILL_SLUG: set()}
        self.operations: list[Operation] = []
        self.lock = threading.Lock()  # one operation at a time: the model stays exact

    def submit(self, kind: str, slug: str, ids: range) -> Operation:
        with self.lock:
            members = self.members[slug]
            listed = set(ids)
            expected = {
                "add": {
                    "added": len(listed - members)
                },  # a member already in is updated only if its expiry changes
                "remove": {"removed": len(listed & members)},
                "replace": {"added": len(listed - members), "removed": len(members - listed)},
            }[kind]
            method = {"add": "POST", "remove": "DELETE", "replace": "PUT"}[kind]
            status, body, unknown = self.http.send(
                method, f"/api/v1/segments/{slug}/members", {"user_ids": list(ids)}
            )
            operation = Operation(kind, slug, ids, expected, unknown=unknown)
            self.operations.append(operation)
            self.stats.count("figures", f"bulk {kind}")
            if status != 202:
                self.stats.problem(f"bulk {kind} {slug} {ids}: {status} {str(body)[:300]}")
                return operation
            operation.id = body["id"]
            self.members[slug] = {"add": members | listed, "remove": members - listed, "replace": listed}[
                kind
            ]
            return operation

    def wait(self, operation: Operation, timeout: float = 300) -> None:
        """Until the operation (and any twin a retry after an unknown outcome made) is done."""
        if operation.id is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.http("GET", f"/api/v1/operations/{operation.id}")
            if status == 200 and body["status"] not in PENDING and not self.pending(operation.slug):
                operation.result = body
                return
            time.sleep(0.5)
        self.stats.problem(f"bulk {operation.kind} {operation.id} still pending after {timeout:.0f} s")

    def pending(self, slug: str) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(
                sa.text(
                    "SELECT count(*) FROM bulk_operations WHERE slug = :slug AND status IN ('queued', 'running')"
                ),
                {"slug": slug},
            )

    def loop(self, stop: threading.Event) -> None:
        step = 0
        while not stop.is_set():
            start = BULK_BASE + step * BULK_STEP
            if step % 4 == 3:
                kind, ids = ("remove", range(start - 2 * BULK_STEP, start - 2 * BULK_STEP + BULK_IDS))
                if step % 8 == 7:
                    kind, ids = "replace", range(start, start + BULK_IDS)
            else:
                kind, ids = "add", range(start, start + BULK_IDS)
            self.wait(self.submit(kind, BULK_SLUG, ids))
            step += 1
            stop.wait(2.0)

    def check(self) -> list[str]:
        problems = []
        for op in self.operations:
            if op.result is None:
                self.wait(op)
            result = op.result or {}
            if op.id is None:
                continue
            if result.get("status") != "finished":
                problems.append(f"bulk {op.kind} {op.id} ended {result.get('status')}: {result.get('error')}")
                continue
            if result["total"] != len(op.ids) and op.kind != "replace":
                problems.append(f"bulk {op.kind} {op.id}: total {result['total']} != {len(op.ids)} ids")
            got = {k: result[k] for k in op.expected}
            if got != op.expected and not op.unknown:  # a twin may have done part of it first
                problems.append(f"bulk {op.kind} {op.id} {op.ids}: counts {got} != expected {op.expected}")
        with self.engine.connect() as conn:
            stuck = conn.execute(
                sa.text(
                    "SELECT id, kind, slug, status, error FROM bulk_operations WHERE status <> 'finished'"
                )
            ).all()
            problems += [f"bulk operation not finished: {tuple(row)}" for row in stuck]
            stored = conn.scalar(sa.text("SELECT count(*) FROM bulk_operations"))
            accepted = sum(op.id is not None for op in self.operations)
            twins = sum(op.unknown for op in self.operations)
            if not accepted <= stored <= accepted + twins:
                problems.append(
                    f"{stored} bulk operations stored for {accepted} accepted ({twins} unknown outcomes)"
                )
            for slug, expected in self.members.items():
                segment = conn.scalar(
                    sa.text("SELECT id FROM segments WHERE slug = :slug AND deleted_at IS NULL"),
                    {"slug": slug},
                )
                members = set(
                    conn.scalars(
                        sa.text("SELECT user_id FROM memberships WHERE segment_id = :id"), {"id": segment}
                    )
                )
                if members != expected:
                    problems.append(
                        f"{slug}: {len(members)} members, the operations imply {len(expected)}; "
                        f"{len(members - expected)} too many, {len(expected - members)} missing"
                    )
                doubled = conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM (SELECT action, lag(action) OVER (PARTITION BY user_id "
                        "ORDER BY occurred_at, id) AS before FROM membership_events "
                        "WHERE segment_id = :id AND visible) t "
                        "WHERE action = before OR (before IS NULL AND action <> 'added')"
                    ),
                    {"id": segment},
                )
                if doubled:
                    problems.append(f"{slug}: {doubled} history entries change nothing (doubled)")
                replayed = set(
                    conn.scalars(
                        sa.text(
                            "SELECT user_id FROM (SELECT DISTINCT ON (user_id) user_id, action "
                            "FROM membership_events WHERE segment_id = :id AND visible "
                            "ORDER BY user_id, occurred_at DESC, id DESC) t WHERE action = 'added'"
                        ),
                        {"id": segment},
                    )
                )
                if replayed != members:
                    problems.append(
                        f"{slug}: history replays to {len(replayed)} members, {len(members)} stored"
                    )
        return problems


class Reports:
    def __init__(self, http: Http, stats: Stats) -> None:
        self.http, self.stats = http, stats
        self.ids: list[str] = []
        self.requests = 0  # every report asked for (the check's per-user ones and seed downloads too)
        self.unknown = 0  # of which an attempt's outcome was unknown (a second report may exist)

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, answer, unknown = self.http.send(method, path, body)
        self.requests += status in (200, 202)
        self.unknown += unknown
        return status, answer

    def request(self, body: dict[str, Any]) -> None:
        status, answer = self.send("POST", "/api/v1/reports", body)
        self.stats.count("figures", "reports requested")
        if status != 202:
            self.stats.problem(f"report {body}: {status} {str(answer)[:300]}")
            return
        self.ids.append(answer["id"])

    def loop(self, stop: threading.Event, started: datetime, every: float) -> None:
        rng = random.Random(SEED)
        while not stop.wait(every):
            self.request({"from": started.isoformat(), "to": datetime.now(UTC).isoformat()})
            self.request({"user_id": rng.randint(1, 40), "period": datetime.now(UTC).strftime("%Y-%m")})

    def finished(self, report_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.http("GET", f"/api/v1/reports/{report_id}")
            if status == 200 and body["status"] not in PENDING or time.monotonic() > deadline:
                return body
            time.sleep(0.3)

    def check(self) -> list[str]:
        problems = []
        for report_id in self.ids:
            body = self.finished(report_id)
            if body.get("status") != "finished":
                problems.append(f"report {report_id}: {body}")
                continue
            status, data = self.http("GET", f"/api/v1/reports/{report_id}.csv")
            lines = data.decode().splitlines() if status == 200 else []
            if status != 200 or len(lines) - 1 != body["rows"] or len(set(lines)) != len(lines):
                problems.append(
                    f"report {report_id}: download {status}, {len(lines)} lines ({len(set(lines))} distinct), "
                    f"rows {body['rows']}"
                )
        return problems


# -- faults and jobs ----------------------------------------------------------------------------


def end_backends(admin: sa.Engine, database: str) -> int:
    with admin.connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).all()
        )


def queue_job(redis: PrivateRedis, path: str) -> bool:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from webapp.platform.queue import QUEUE_NAME, JsonJob

    client = direct_client(redis.port, 1.0)
    try:
        Queue(QUEUE_NAME, connection=client, job_class=JsonJob, serializer=JSONSerializer).enqueue(
            path, job_timeout=300, result_ttl=60, failure_ttl=86_400
        )
        return True
    except Exception:  # Redis stopped: the next tick queues it
        return False
    finally:
        client.close()


def every(stop: threading.Event, seconds: float, action: Callable[[], object]) -> None:
    while not stop.wait(seconds):
        action()


# -- the soak -----------------------------------------------------------------------------------


@pytest.fixture
def soak_redis(tmp_path: Path):
    server = PrivateRedis(tmp_path / "redis", appendonly=True)
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()


def test_soak(app, committed_db, soak_redis, tmp_path):
    from webapp.platform.extensions import db

    stats = Stats()
    database = sa.make_url(app.config["DATABASE_URL"]).database
    admin = sa.create_engine(
        sa.make_url(app.config["DATABASE_URL"]).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with app.app_context():
        engine = db.engine
    (tmp_path / "reports").mkdir()
    (tmp_path / "metrics").mkdir()
    env = worker_env(
        app,
        REDIS_URL=soak_redis.url,
        REPORTS_DIR=str(tmp_path / "reports"),
        JOB_ORPHAN_SECONDS="5",
        SCHEDULER_INTERVAL_SECONDS="1",
        SCHEDULER_RECONNECT_MAX_SECONDS="2",
        TRUSTED_HOSTS="127.0.0.1,localhost",
        RATELIMIT_ENABLED="false",
        GUNICORN_WORKERS="4",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        DASHBOARD_OPEN="true",
    )
    stack = Stack(env, tmp_path, stats)
    for name in ("gunicorn", "worker", "scheduler"):
        stack.start(name)
    deadline = time.monotonic() + 60
    while not answers(stack.port):
        assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-3000:]
        time.sleep(0.2)

    http = Http(stack.port, stats)
    run = oracle.Oracle(http, SEED)
    run.setup()
    for slug in (BULK_SLUG, KILL_SLUG):
        assert http("POST", "/api/v1/segments", {"slug": slug})[0] == 201
    bulk, reports = Bulk(http, stats, engine), Reports(http, stats)
    started, began = datetime.now(UTC), time.monotonic()
    stop = threading.Event()

    def kill_worker() -> None:
        start = KILL_BASE + stats.faults["worker kill -9"] * KILL_IDS
        operation = bulk.submit("add", KILL_SLUG, range(start, start + KILL_IDS))
        seen = None
        for _ in range(600):
            status, body = http("GET", f"/api/v1/operations/{operation.id}")
            if status == 200 and body["status"] == "running" and 0 < body["done"] < body["total"]:
                seen = body
                break
            time.sleep(0.1)
        if seen is None:
            stats.problem(f"the {KILL_IDS:,}-id bulk add never ran for the worker kill: {operation}")
        killed = stack.kill_worker()
        stats.count("faults", "worker kill -9")
        stats.count("figures", "processes killed by kill -9", killed)
        killed_at = time.monotonic()
        print(f"{killed_at - began:6.1f}s worker kill -9 ({killed} processes) at {seen and seen['done']} ids")

        def orphan() -> None:
            kill = stats.faults["worker kill -9"]
            bulk.wait(operation)
            stats.count(
                "figures",
                f"kill {kill}: its bulk add finished after (s)",
                round(time.monotonic() - killed_at),
            )

        threading.Thread(target=orphan, name="orphan", daemon=True).start()

    def stop_redis() -> None:
        stack.redis_away = True
        soak_redis.stop()
        stats.count("faults", "redis stopped")
        print(f"{time.monotonic() - began:6.1f}s redis stopped")
        time.sleep(min(REDIS_DOWN, SECONDS / 4))
        soak_redis.start()
        stack.redis_away, stack.redis_back = False, time.monotonic()
        print(f"{time.monotonic() - began:6.1f}s redis started")

    def postgres() -> None:
        for _ in range(3):
            ended = end_backends(admin, database)
            stats.count("figures", "backends ended", ended)
            time.sleep(0.7)
        stats.count("faults", "postgres backends ended (3 rounds)")
        print(f"{time.monotonic() - began:6.1f}s postgres backends ended")

    def faults() -> None:
        actions = {"worker": kill_worker, "redis": stop_redis, "postgres": postgres}
        for fraction, name in FAULTS:
            if stop.wait(max(0.0, began + fraction * SECONDS - time.monotonic())):
                return
            try:
                actions[name]()
            except Exception as exc:  # reported, the soak goes on
                stats.problem(f"fault {name} failed: {exc!r}")

    def job(path: str) -> Callable[[], None]:
        def tick() -> None:
            stats.count(
                "figures",
                f"{path.rsplit('.', 1)[1]} queued"
                if queue_job(soak_redis, path)
                else "jobs not queued (Redis away)",
            )

        return tick

    threads = [
        threading.Thread(target=faults, name="faults"),
        threading.Thread(target=bulk.loop, args=(stop,), name="bulk"),
        threading.Thread(target=reports.loop, args=(stop, started, max(10.0, SECONDS / 8)), name="reports"),
        threading.Thread(target=every, args=(stop, 1.0, stack.watch), name="supervisor"),
        threading.Thread(
            target=every, args=(stop, 5.0, job("webapp.jobs.tasks.apply_scheduled_rollouts")), name="rollouts"
        ),
        threading.Thread(
            target=every, args=(stop, 20.0, job("webapp.jobs.tasks.purge_expired")), name="purge"
        ),
    ]
    try:
        for thread in threads:
            thread.start()
        run.run(0, threads=WRITERS, seconds=SECONDS)
        writing = time.monotonic() - began
        stop.set()
        for thread in threads:
            thread.join(600)
        stack.watch()  # the supervisor has stopped: one last look
        stats.figures["oracle operations"] = len(run.log)

        time.sleep(oracle.SETTLE)
        problems = bulk.check() + reports.check()
        since = (started - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
        problems += run.check(report_csv=report_csv(http, reports), seed_rows=seed_rows(http, reports, since))
        problems += stats.problems
        with engine.connect() as conn:
            pending = conn.execute(
                sa.text("SELECT id, kind, status, error FROM reports WHERE status <> 'finished'")
            ).all()
            problems += [f"report not finished: {tuple(row)}" for row in pending]
            stored = stats.figures["reports in the database"] = conn.scalar(
                sa.text("SELECT count(*) FROM reports")
            )
            if not reports.requests <= stored <= reports.requests + reports.unknown:
                problems.append(
                    f"{stored} reports stored for {reports.requests} requests ({reports.unknown} unknown outcomes)"
                )
            stats.figures["bulk operations in the database"] = conn.scalar(
                sa.text("SELECT count(*) FROM bulk_operations")
            )
            stats.figures["history rows checked by the oracle (users 1-40)"] = conn.scalar(
                sa.text("SELECT count(*) FROM membership_events WHERE user_id <= 40 AND visible")
            )
        print(summary(stats, writing, run, tmp_path))
        assert not problems, run.failure(problems)
    finally:
        stop.set()
        stack.stop()
        admin.dispose()


def report_csv(http: Http, reports: Reports) -> Callable[[int], list[tuple]]:
    def rows(user_id: int) -> list[tuple]:
        body = {
            "kind": "user_history",
            "user_id": user_id,
            "from": "2000-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
        }
        status, answer = reports.send("POST", "/api/v1/reports", body)
        assert status == 202, answer
        reports.ids.append(answer["id"])
        state = reports.finished(answer["id"])
        assert state["status"] == "finished", state
        status, data = http("GET", f"/api/v1/reports/{answer['id']}.csv")
        assert status == 200, data
        return oracle.csv_history(data.decode())

    return rows


def seed_rows(http: Http, reports: Reports, since: str) -> Callable[[int], list[tuple]]:
    from urllib.parse import quote

    def rows(user_id: int) -> list[tuple]:
        status, answer = reports.send("GET", f"/report?date={quote(since)}&user_id={user_id}")
        assert status == 200, answer
        deadline = time.monotonic() + 300
        while True:
            status, data = http("GET", f"/download?id={answer['task_id']}")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200, data
        return oracle.seed_history(data.decode())

    return rows


def summary(stats: Stats, writing: float, run: oracle.Oracle, logs: Path) -> str:
    tracebacks = {
        name: (logs / f"{name}.log").read_text(errors="replace").count("Traceback")
        for name in ("gunicorn", "worker", "scheduler")
    }
    lines = [
        "",
        f"soak: {writing:.0f} s of writers ({WRITERS} threads, seed {SEED}), logs in {logs}",
        f"  logical requests {stats.figures['requests']}, attempts {sum(stats.attempts.values())}",
        "  attempts by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.attempts.items())),
        "  retries: " + (", ".join(f"{k}: {v}" for k, v in sorted(stats.retries.items())) or "none"),
        "  faults: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.faults.items())),
        "  figures: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.figures.items()) if k != "requests"),
        "  tracebacks in the logs: " + ", ".join(f"{k}: {v}" for k, v in tracebacks.items()),
        f"  oracle: {len(run.log)} operations, users 1-{run.users} checked five ways",
        f"  problems: {len(stats.problems)}",
    ]
    return "\n".join(lines)
