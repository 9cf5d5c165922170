"""`make bench`: start what is needed on 127.0.0.1, measure, stop everything, print a table.

Sections: bulk (1M ids, API and dashboard upload), read (the hot path under gunicorn with wrk,
a different user on every request, on 1M and 10M memberships, with and without the rate
limiter), ofrep (OpenFeature's single evaluation beside the hot read, same server and users),
replicas (a primary and a streaming replica of its own: replay lag, the tokened read's cost,
fallbacks under injected lag, gunicorn's CPU per read from the replica against the primary),
scaling (rollout segments 10/100/1000; user-id independence), dashboard (segments
page with 10k segments), expiry (1M), report (100k, 1M).
Each figure is printed next to a baseline measured in the same run. ``--quick`` is a smoke run:
smaller sizes (the large read database has 1M memberships instead of 10M), shorter runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.cookiejar
import json
import os
import platform
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench import tools
from devstack.bulk_load import copy_memberships
from devstack.redis_server import PrivateRedis

DB = "segments_bench"
SYSTEM_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RESULTS = tools.ROOT / "bench" / "results"
ROTATING = tools.ROOT / "bench" / "rotating_users.lua"
ADMIN = SYSTEM_POSTGRES  # the maintenance database of the server the run uses (choose_server)


@dataclass
class Row:
    section: str
    case: str
    value: str
    baseline: str
    ratio: str
    target: str = ""
    verdict: str = ""


ROWS: list[Row] = []


def record(section, case, value, baseline, ratio, target="", ok=None):
    verdict = "" if ok is None else ("PASS" if ok else "MISS")
    ROWS.append(Row(section, case, value, baseline, ratio, target, verdict))
    print(
        f"  {section:8} {case:52} {value:>22}  vs {baseline:>22}  {ratio:>10}  {target} {verdict}", flush=True
    )


# -- database ---------------------------------------------------------------------------------


def db_url(name: str = DB) -> str:
    return sa.make_url(ADMIN).set(database=name).render_as_string(hide_password=False)


def choose_server(tmp: Path) -> None:
    """Point ADMIN at the server the run uses (see devstack.embedded.SERVER_SETTINGS)."""
    global ADMIN
    if os.environ.get("BENCH_POSTGRES") == "system":
        return
    from devstack import embedded

    ADMIN = embedded.start_postgres_on_port(tmp / "pg", tools.free_port(), embedded.SERVER_SETTINGS)


def stop_embedded_server(tmp: Path) -> None:
    """Stop the run's own server if one runs (even one a failed choose_server started)."""
    from devstack import embedded

    embedded.stop_postgres(tmp / "pg")  # (nothing to do without one)


def fresh_database(env: dict, name: str = DB) -> sa.Engine:
    """An empty, migrated database ``name`` (dropped first if it exists): a copy of a template
    database migrated once per run."""
    drop_database(name)
    template = f"{DB}_template"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :t"), {"t": template}):
            conn.execute(sa.text(f'CREATE DATABASE "{template}"'))
            subprocess.run(
                [str(tools.BIN / "flask"), "db", "upgrade"],
                cwd=tools.ROOT,
                env={**os.environ, **env, "DATABASE_URL": db_url(template)},
                check=True,
                capture_output=True,
            )
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return sa.create_engine(db_url(name))


def drop_database(name: str = DB) -> None:
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def catalog_changed(conn) -> None:
    """What the services do in every transaction that changes segments: the read path's
    in-memory catalogs revalidate against this version."""
    conn.execute(sa.text("UPDATE catalog_version SET version = version + 1 WHERE id = 1"))


def make_segments(engine, prefix: str, count: int, basis_points: int) -> None:
    """Segments created set-based, each rollout recorded like the service does."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
                "SELECT :p || lpad(g::text, 4, '0'), 'bench', :bp, md5(random()::text || g), now() "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"p": prefix, "bp": basis_points, "n": count},
        )
        if basis_points:
            conn.execute(
                sa.text(
                    "INSERT INTO rollout_changes (segment_id, from_bp, to_bp, reason, changed_at) "
                    "SELECT id, 0, rollout_basis_points, 'rollout', created_at FROM segments WHERE slug LIKE :p || '%'"
                ),
                {"p": prefix},
            )
        catalog_changed(conn)


# The relations the hot reads descend: memberships and rollout_exclusions and their primary keys
# (catalog_version, one page, is read on every request anyway). Loaded by copy_memberships,
# they are in shared_buffers, as on a server that has served every user.
HOT_RELATIONS_SQL = (
    "SELECT to_regclass(name) AS oid FROM unnest(ARRAY['memberships', 'rollout_exclusions']) name "
    "UNION ALL SELECT indexrelid FROM pg_index "
    "WHERE indisprimary AND indrelid IN (to_regclass('memberships'), to_regclass('rollout_exclusions'))"
)


def evict_hot_relations(engine) -> bool:
    """Drop HOT_RELATIONS_SQL's relations from shared_buffers (pg_buffercache 1.6, PostgreSQL
    18+): the state after a restart without autoprewarm. False where the server cannot."""
    with engine.begin() as conn:
        if not conn.scalar(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_buffercache'")
        ):
            return False
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_buffercache"))
        if conn.scalar(sa.text("SELECT to_regproc('pg_buffercache_evict_relation')")) is None:
            return False
        conn.execute(
            sa.text(
                f"SELECT pg_buffercache_evict_relation(oid) FROM ({HOT_RELATIONS_SQL}) hot "
                "WHERE oid IS NOT NULL"
            )
        )
    return True


SSO = {"X-Forwarded-Email": "bench@example.com"}  # the dashboard's user, as the SSO proxy would name them


def post(url: str, data: bytes, headers: dict, opener=None) -> dict:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with (opener or urllib.request.build_opener()).open(request, timeout=300) as response:
        body = response.read()
    return json.loads(body) if headers.get("Accept") != "text/html" else {"html": body.decode()}


def get(url: str, headers: dict | None = None, opener=None) -> bytes:
    request = urllib.request.Request(url, headers={**SSO, **(headers or {})})
    with (opener or urllib.request.build_opener()).open(request, timeout=60) as response:
        return response.read()


def wait_operation(url: str, timeout: float = 600) -> dict:
    """Poll a bulk operation's status (GET /api/v1/operations/<id>) until it is finished or failed."""
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(get(url))
        if state["status"] in ("finished", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


# -- sections ---------------------------------------------------------------------------------


# -- floors: PostgreSQL alone doing a big operation's table work (issue 28) --------------------

FLOOR_OP = "00000000-0000-0000-0000-0000000f1002"  # the floors' staged ids (rolled back)
EVENTS = "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor, visible) "


def _new_segment(engine, slug: str, members: range | None = None) -> int:
    """A segment created set-based (committed), with ``members`` as explicit members."""
    with engine.begin() as conn:
        segment = conn.scalar(
            sa.text(
                "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
                "VALUES (:slug, '', 0, 'x', now()) RETURNING id"
            ),
            {"slug": slug},
        )
        if members is not None:
            conn.execute(
                sa.text(
                    "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                    "SELECT g, :s, now(), NULL FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
                ),
                {"s": segment, "a": members.start, "b": members.stop - 1},
            )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE memberships"))
    return segment


def _floor(engine, staged: list[int] | None, statements: list[str], params: dict) -> float:
    """Seconds for PostgreSQL alone to do ``statements`` in one transaction (after COPYing
    ``staged`` into bulk_operation_ids, as a request does for its operation to resume), on the
    real tables (same indexes, logging, partitions). Rolled back: the table work and its WAL
    are done, only the one commit's flush is not."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            started = time.perf_counter()
            if staged is not None:
                with cur.copy("COPY bulk_operation_ids (operation_id, user_id) FROM STDIN") as copy:
                    for start in range(0, len(staged), 100_000):
                        copy.write("".join(f"{FLOOR_OP}\t{u}\n" for u in staged[start : start + 100_000]))
            for statement in statements:
                cur.execute(statement, {"op": FLOOR_OP, **params})
            seconds = time.perf_counter() - started
        raw.rollback()
    finally:
        raw.close()
    return seconds


_FLOOR_ADD = [
    "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
    "SELECT user_id, %(s)s, now(), NULL FROM bulk_operation_ids WHERE operation_id = %(op)s",
    EVENTS + "SELECT user_id, %(s)s, %(slug)s, 'added', 'api', now(), 'bench', true "
    "FROM bulk_operation_ids WHERE operation_id = %(op)s",
]
_FLOOR_REMOVE = [
    "WITH del AS (DELETE FROM memberships m USING bulk_operation_ids b WHERE b.operation_id = %(op)s "
    "AND m.segment_id = %(s)s AND m.user_id = b.user_id RETURNING m.user_id) "
    + EVENTS
    + "SELECT user_id, %(s)s, %(slug)s, 'removed', 'api', now(), 'bench', true FROM del",
]
_FLOOR_REPLACE_REMOVE = [  # the members not listed leave
    "WITH del AS (DELETE FROM memberships m WHERE m.segment_id = %(s)s AND NOT EXISTS (SELECT 1 FROM "
    "bulk_operation_ids b WHERE b.operation_id = %(op)s AND b.user_id = m.user_id) RETURNING m.user_id) "
    + EVENTS
    + "SELECT user_id, %(s)s, %(slug)s, 'removed', 'api', now(), 'bench', true FROM del",
]
_FLOOR_DELETE = [  # a deleted segment's rows: gone, kept for a restore, history stamped
    "WITH del AS (DELETE FROM memberships WHERE segment_id = %(s)s RETURNING user_id, added_at, expires_at), "
    "kept AS (INSERT INTO retired_memberships (segment_id, user_id, added_at, expires_at) "
    "SELECT %(s)s, user_id, added_at, expires_at FROM del) "
    + EVENTS
    + "SELECT user_id, %(s)s, %(slug)s, 'removed', 'segment_deleted', now(), 'bench', true FROM del",
]
_FLOOR_PURGE = [
    "WITH del AS (DELETE FROM memberships WHERE expires_at <= now() RETURNING user_id, segment_id, expires_at) "
    + EVENTS
    + "SELECT del.user_id, del.segment_id, s.slug, 'removed', 'ttl', del.expires_at, 'system', true "
    "FROM del JOIN segments s ON s.id = del.segment_id",
]


def bulk_floors(engine, size: int) -> dict[str, float]:
    """The floor of each big operation of ``size`` ids (module docstring of bulk.py: add, remove,
    replace by ``size`` other ids, delete a ``size``-member segment), same run, same database."""
    floors = {}
    empty = _new_segment(engine, "FLOOR_ADD")
    ids = list(range(40_000_000, 40_000_000 + size))
    floors["add"] = _floor(engine, ids, _FLOOR_ADD, {"s": empty, "slug": "FLOOR_ADD"})
    full = _new_segment(engine, "FLOOR_BIG", range(40_000_000, 40_000_000 + size))
    params = {"s": full, "slug": "FLOOR_BIG"}
    floors["remove"] = _floor(engine, ids, _FLOOR_REMOVE, params)
    others = list(range(41_000_000, 41_000_000 + size))
    floors["replace"] = _floor(engine, others, _FLOOR_ADD + _FLOOR_REPLACE_REMOVE, params)
    floors["delete"] = _floor(engine, None, _FLOOR_DELETE, params)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM memberships WHERE segment_id IN (:a, :b)"), {"a": empty, "b": full})
        conn.execute(sa.text("DELETE FROM segments WHERE id IN (:a, :b)"), {"a": empty, "b": full})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
    for name, seconds in floors.items():
        print(f"  (floor: {name} of {size:,} ids: {seconds:.2f} s)", flush=True)
    return floors


def record_big(case: str, seconds: float, detail: str, floor: float, floor_what: str, **kw) -> None:
    """A big operation's row: end to end against its same-run floor, PASS/MISS against 2x (or
    ``target``/``ok`` when given, e.g. the upload against the API add)."""
    ratio = seconds / floor
    record(
        kw.get("section", "bulk"),
        case,
        f"{seconds:.2f} s{detail}",
        f"{floor:.2f} s floor ({floor_what})",
        f"{ratio:.1f}x",
        kw.get("target", "<= 2x floor"),
        kw.get("ok", ratio <= 2),
    )


DELETE_PATIENCE = 180  # s: the delete's wait (a first chunk has been seen running for minutes)


def bench_bulk(engine, env, size: int) -> None:
    """1M ids in one request, by the API and by a dashboard upload. Over SYNC_LIMIT ids the request
    stores them and queues a chunked operation, which an RQ worker (``flask worker``, forking a
    work horse per job, as in production) runs; the figure is request + operation, end to end.
    Peak RSS: the gunicorn workers during the request, the worker's processes during the job."""
    ids = list(range(10_000_000, 10_000_000 + size))
    floors = bulk_floors(engine, size)
    port = tools.free_port()
    with tools.gunicorn("wsgi:app", env, port) as server, tools.rq_worker(env) as worker:
        base = f"http://127.0.0.1:{port}"
        post(
            base + "/api/v1/segments",
            json.dumps({"slug": "BULK_API"}).encode(),
            {"Content-Type": "application/json"},
        )
        post(
            base + "/api/v1/segments",
            json.dumps({"slug": "BULK_DASH"}).encode(),
            {"Content-Type": "application/json"},
        )
        workers = tools.worker_pids(server.pid)

        def api_add() -> tuple[float, dict]:
            accepted, result = tools.timed(
                lambda: post(
                    base + "/api/v1/segments/BULK_API/members", body, {"Content-Type": "application/json"}
                )
            )
            return accepted, wait_operation(result["status_url"]) if "status_url" in result else result

        tools.reset_peak_rss(workers)
        body = json.dumps({"user_ids": ids}).encode()
        with tools.PeakRss(tools.process_tree(worker.pid)) as job_rss:
            api_s, (accepted_s, result) = tools.timed(api_add)
        api_rss = tools.peak_rss_mb(workers)
        assert result["added"] == size, result
        record_big(
            f"API add: {size:,} ids, one request + its operation",
            api_s,
            f" ({accepted_s:.2f} s to 202), {api_rss:.0f} / {job_rss.mb:.0f} MB peak",
            floors["add"],
            "stage + INSERT rows + history",
            target="<= 2x floor, < 300 MB",
            ok=api_s <= 2 * floors["add"] and max(api_rss, job_rss.mb) < 300,
        )
        # Replace the segment's members by as many others, then remove those: request -> finished.
        others = list(range(10_000_000 + size, 10_000_000 + 2 * size))

        def change(method: str) -> dict:
            answer = _call(base + "/api/v1/segments/BULK_API/members", method, {"user_ids": others})
            assert "http_status" not in answer, answer
            return wait_operation(answer["status_url"], timeout=900) if "status_url" in answer else answer

        for method, name, floor_what in (
            ("PUT", "replace", "stage + INSERT new + DELETE old, with history"),
            ("DELETE", "remove", "stage + DELETE rows + history"),
        ):
            with tools.PeakRss(tools.process_tree(worker.pid)) as job_rss:
                seconds, state = tools.timed(lambda m=method: change(m))
            assert state.get("status", "finished") == "finished", state
            record_big(
                f"API {name}: {size:,} ids" + (" (a segment of as many others)" if name == "replace" else ""),
                seconds,
                f", {job_rss.mb:.0f} MB peak",
                floors[name],
                floor_what,
            )
        # The dashboard upload: session cookie + CSRF token + multipart file, like the browser.
        jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = get(base + "/segments/BULK_DASH", opener=jar).decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        boundary = secrets.token_hex(8)
        upload = "\n".join(str(i) for i in ids).encode()
        form = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ids.csv"\r\n'
                f"Content-Type: text/csv\r\n\r\n"
            ).encode()
            + upload
            + f"\r\n--{boundary}--\r\n".encode()
        )

        def dashboard_add() -> tuple[float, dict]:
            accepted, html = tools.timed(
                lambda: post(
                    base + "/segments/BULK_DASH/members",
                    form,
                    {
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "HX-Request": "true",
                        "Accept": "text/html",
                        **SSO,
                    },
                    jar,
                )
            )
            operation = re.search(r'id="operation-([0-9a-f-]{36})"', html["html"])
            assert operation or f"{size:,} added" in html["html"], html["html"][:500]
            if operation is None:
                return accepted, {"status": "finished", "added": size}
            return accepted, wait_operation(f"{base}/api/v1/operations/{operation.group(1)}")

        tools.reset_peak_rss(workers)
        with tools.PeakRss(tools.process_tree(worker.pid)) as job_rss:
            dash_s, (accepted_s, result) = tools.timed(dashboard_add)
        dash_rss = tools.peak_rss_mb(workers)
        assert result["status"] == "finished" and result["added"] == size, result
        record(
            "bulk",
            f"dashboard upload: {len(upload) / 1e6:.1f} MB file, {size:,} ids + its operation",
            f"{dash_s:.2f} s ({accepted_s:.2f} s to response), {dash_rss:.0f} / {job_rss.mb:.0f} MB peak",
            f"{api_s:.2f} s API add (floor {floors['add']:.2f} s)",
            f"{dash_s / api_s:.2f}x ({dash_s / floors['add']:.1f}x floor)",
            "<= 1.2x API add, < 300 MB",
            dash_s <= 1.2 * api_s and max(dash_rss, job_rss.mb) < 300,
        )

        # Delete the segment the upload filled: request -> its members' removal finished.
        def delete() -> tuple[float, dict]:
            accepted, answer = tools.timed(lambda: _call(base + "/api/v1/segments/BULK_DASH", "DELETE"))
            assert "http_status" not in answer, answer
            if not answer["operation_url"]:
                return accepted, answer
            return accepted, wait_operation(answer["operation_url"], timeout=DELETE_PATIENCE)

        with tools.PeakRss(tools.process_tree(worker.pid)) as job_rss:
            seconds, (accepted_s, state) = tools.timed(delete)
        status = state.get("status", "finished")
        assert status in ("finished", "running", "queued"), state
        if status != "finished":  # (stop its statement: the next sections share the server)
            with engine.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE state = 'active' "
                        "AND pid <> pg_backend_pid() AND query LIKE '%retired_memberships%'"
                    )
                )
        record_big(
            f"API delete: a segment of {size:,} members",
            seconds,
            f" ({accepted_s:.2f} s to answer)"
            + ("" if status == "finished" else f", NOT FINISHED: {state.get('done', 0):,} done, given up")
            + f", {job_rss.mb:.0f} MB peak",
            floors["delete"],
            "DELETE rows + keep for restore + history",
        )


_PROFILE = """
import collections, json, re, time
from sqlalchemy import event
from webapp import create_app
from webapp.platform.extensions import db
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments
from webapp.jobs import tasks

KINDS = (  # (label, pattern): the first that matches a statement names it
    ("read the chunk's staged ids", r"FROM bulk_operation_ids WHERE operation_id = .* LIMIT"),
    ("segment bulk lock (advisory)", r"pg_advisory_xact_lock"),
    ("upsert rows + history + outbox (one CTE)", r"INSERT INTO memberships"),
    ("segment reads (row FOR SHARE, rollout/group check)", r"FROM segments"),
    ("operation row: cursor and counts", r"UPDATE bulk_operations"),
    ("catalog_version bump", r"catalog_version"),
    ("ANALYZE bulk_operation_ids (once)", r"ANALYZE"),
)
spent, calls = collections.Counter(), collections.Counter()
app = create_app()
with app.app_context():
    engine = db.engine

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["t"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):
        kind = next((k for k, p in KINDS if re.search(p, statement, re.S)), "other: " + " ".join(statement.split())[:50])
        spent[kind] += time.perf_counter() - conn.info["t"]
        calls[kind] += 1

    segments.create_segment(db.session, "PROFILE"); db.session.commit()
    ids = list(range(60_000_000, 60_000_000 + COUNT))
    t = time.perf_counter()
    operation = bulk.bulk_add(db.session, "PROFILE", ids)
    db.session.commit()
    request = time.perf_counter() - t
    before_loop = dict(spent)
    spent.clear(); calls.clear()
    commit, chunks = 0.0, 0
    t = time.perf_counter()
    bulk.analyse_staged(db.session, operation); db.session.commit()  # (as the job does)
    more = True
    while more:
        more = bulk.run_chunk(db.session, operation)
        c = time.perf_counter()
        db.session.commit()
        commit += time.perf_counter() - c
        chunks += 1
    loop = time.perf_counter() - t
    in_loop = dict(spent)  # (finish's statements are not the loop's)
    c = time.perf_counter()
    bulk.finish(db.session, operation); db.session.commit()
    finish = time.perf_counter() - c
    print(json.dumps({"request": request, "request_sql": before_loop, "loop": loop, "chunks": chunks,
                      "commit": commit, "finish": finish, "spent": in_loop, "calls": dict(calls)}))
"""


def _trait_line(user: int) -> dict:
    """One user's traits in the traits bench: five keys of each kind a service pushes."""
    return {
        "country": ("RU", "BY", "KZ", "AM")[user % 4],
        "plan": ("free", "paid")[user % 2],
        "app_version": f"5.{user % 9}.{user % 13}",
        "age": 18 + user % 60,
        "beta": user % 10 == 0,
    }


def bench_traits(engine, env, size: int, tmp: Path) -> None:
    """A trait import of ``size`` users (issue 29): a JSON-lines file POSTed to
    /api/v1/users/traits:import (streamed to disk, checked whole, staged by COPY: the request),
    then its operation run by an RQ worker in chunks under the users' locks (the job); end to end
    against the floor: PostgreSQL alone COPYing the same rows into a table like user_traits in one
    transaction. Peak RSS: the gunicorn workers during the request, the worker during the job."""
    path = tmp / "traits.jsonl"
    with open(path, "w") as file:
        for start in range(1, size + 1, 100_000):
            file.write(
                "".join(
                    json.dumps({"user_id": u, "traits": _trait_line(u)}, separators=(",", ":")) + "\n"
                    for u in range(start, min(start + 100_000, size + 1))
                )
            )
    rows = "".join(
        f"{u}\t{json.dumps(_trait_line(u), separators=(',', ':'))}\t2026-01-01 00:00:00+00\n"
        for u in range(1, size + 1)
    )
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE floor_traits (LIKE user_traits INCLUDING ALL)"))
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy("COPY floor_traits (user_id, traits, updated_at) FROM STDIN") as copy:
            copy.write(rows)
    floor = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE floor_traits"))
    print(f"  (floor: COPY of {size:,} users' traits: {floor:.2f} s)", flush=True)
    port = tools.free_port()
    limits = {**env, "TRAIT_IMPORT_MAX_BYTES": str(2 * path.stat().st_size)}
    with tools.gunicorn("wsgi:app", limits, port) as server, tools.rq_worker(limits) as worker:
        base = f"http://127.0.0.1:{port}"
        workers = tools.worker_pids(server.pid)
        tools.reset_peak_rss(workers)

        def upload() -> dict:
            with open(path, "rb") as file:
                request = urllib.request.Request(
                    base + "/api/v1/users/traits:import?mode=replace",
                    data=file,
                    headers={
                        "Content-Type": "application/x-ndjson",
                        "Content-Length": str(path.stat().st_size),
                    },
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=600) as response:
                    return json.loads(response.read())

        with tools.PeakRss(tools.process_tree(worker.pid)) as job_rss:
            accepted_s, accepted = tools.timed(upload)
            job_s, state = tools.timed(lambda: wait_operation(accepted["status_url"], timeout=1800))
        api_rss = tools.peak_rss_mb(workers)
        assert state["status"] == "finished" and state["added"] == size, state
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM user_traits")) == size
            events = conn.scalar(sa.text("SELECT count(*) FROM trait_events"))
        assert events == size, events
        record_big(
            f"import: {size:,} users' traits ({path.stat().st_size / 1e6:.0f} MB JSON lines) + its operation",
            accepted_s + job_s,
            f" ({accepted_s:.2f} s to 202, job {job_s:.2f} s), {api_rss:.0f} / {job_rss.mb:.0f} MB peak",
            floor,
            "COPY the rows into a like table",
            section="traits",
            target="measured (stage 1: no target)",
            ok=None,
        )
    path.unlink()


def _rule_segment_sql(engine, count: int) -> None:
    """``count`` segments in rule mode at 100% (made set-based, as make_segments does), each with
    its own rules over _trait_line's keys: country = RU and age >= k (k = 18 .. 77)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at, rules, "
                "rules_version, rule_mode) "
                "SELECT 'RULE' || lpad(g::text, 4, '0'), 'bench', 10000, md5(random()::text || g), now(), "
                "jsonb_build_array(jsonb_build_object('conditions', jsonb_build_array("
                "jsonb_build_object('trait', 'country', 'operator', 'str_eq', 'value', 'RU'), "
                "jsonb_build_object('trait', 'age', 'operator', 'num_gte', 'value', 18 + g % 60)))), 1, true "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO rollout_changes (segment_id, from_bp, to_bp, reason, changed_at, rule_mode) "
                "SELECT id, 0, 10000, 'rollout', created_at, true FROM segments WHERE slug LIKE 'RULE%'"
            )
        )
        catalog_changed(conn)


def _load_traits(engine, size: int) -> float:
    """``size`` users' traits (_trait_line) COPYed into user_traits; seconds taken."""
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy("COPY user_traits (user_id, traits, updated_at) FROM STDIN") as copy:
            for start in range(1, size + 1, 100_000):
                copy.write(
                    "".join(
                        f"{u}\t{json.dumps(_trait_line(u), separators=(',', ':'))}\t2026-01-01 00:00:00+00\n"
                        for u in range(start, min(start + 100_000, size + 1))
                    )
                )
        conn.execute(sa.text("ANALYZE user_traits"))
    return time.perf_counter() - started


def _latencies(call, count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - started)
    return out


def _pct_ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else float("nan")


def _rules_databases(env, size: int, read_users: int) -> tuple[str, str]:
    """bench_rules' two databases (plain, with rules): see its docstring."""
    plain_db, rules_db = f"{DB}_rules_a", f"{DB}_rules_b"
    engines = {name: fresh_database(env, name) for name in (plain_db, rules_db)}
    for name, engine in engines.items():
        loaded = _load_traits(engine, size)
        make_segments(engine, "R", 200, 1000)
        make_segments(engine, "P", 10, 0)
        copy_memberships(engine, "P", 1, read_users)
        if name == plain_db:  # as many members each through 200 more 10% rollouts: equal answers
            make_segments(engine, "X", 200, 1000)
        if name == rules_db:
            _rule_segment_sql(engine, 200)
            with engine.begin() as conn:  # ~10% of the rule segments per user: ~20 rows each
                conn.execute(
                    sa.text(
                        "INSERT INTO rule_matches (user_id, segment_id, since) SELECT u, s.id, now() "
                        "FROM generate_series(1, :n) u CROSS JOIN segments s "
                        "WHERE s.slug LIKE 'RULE%' AND abs(hashint8(u * 1000 + s.id)) % 10 = 0"
                    ),
                    {"n": read_users},
                )
                rows = conn.scalar(sa.text("SELECT count(*) FROM rule_matches"))
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    sa.text("VACUUM ANALYZE rule_matches")
                )
            record("rules", f"load: {size:,} users' traits, {rows:,} rule rows", f"{loaded:.1f} s", "—", "—")
    for engine in engines.values():
        engine.dispose()
    return plain_db, rules_db


TRAIT_UPDATES, TRAIT_UPDATE_ROUNDS = 2000, 4  # PATCHes per server, in rounds taken in turn


def _trait_updates(ruled: Server, plain: Server, size: int) -> None:
    """A trait update (PATCH /users/<id>/traits, one client, a random user each) on both servers,
    in turns (the machine's load falls on both alike), with the stack's floor on the same server
    and client: GET /healthz (gunicorn and Flask, no database) and GET /users/<id>/traits (one
    read in a transaction). The rules' own cost is the PATCH's with 200 rule segments less the
    PATCH's with none; the target is the absolute p99."""
    rng = random.Random(29)
    times: dict[str, list[float]] = {"rules": [], "plain": [], "healthz": [], "get": []}

    def patch(base: str) -> Callable[[int], None]:
        def call(i: int) -> None:
            answer = _call(
                f"{base}/api/v1/users/{rng.randint(1, size)}/traits",
                "PATCH",
                {"traits": {"age": 18 + i % 60}},
            )
            assert "http_status" not in answer, answer

        return call

    def get(path: Callable[[], str]) -> Callable[[int], None]:
        return lambda _: _call(path(), "GET")

    calls = {
        "rules": patch(ruled.url),
        "plain": patch(plain.url),
        "healthz": get(lambda: f"{ruled.url}/healthz"),
        "get": get(lambda: f"{ruled.url}/api/v1/users/{rng.randint(1, size)}/traits"),
    }
    for call in calls.values():
        _latencies(call, 100)  # warm-up
    per_round = TRAIT_UPDATES // TRAIT_UPDATE_ROUNDS
    for _ in range(TRAIT_UPDATE_ROUNDS):
        for name, call in calls.items():
            times[name] += _latencies(call, per_round if name in ("rules", "plain") else per_round // 2)
    p50 = {name: _pct_ms(values, 0.5) for name, values in times.items()}
    p99 = {name: _pct_ms(values, 0.99) for name, values in times.items()}
    record(
        "rules",
        "trait update (PATCH, 1 client) with 200 rule segments evaluated: p99",
        f"{p99['rules']:.1f} ms (p50 {p50['rules']:.1f})",
        f"{p99['plain']:.1f} ms (p50 {p50['plain']:.1f}), no rule segment",
        f"{p99['rules'] / p99['plain']:.2f}",
        "p99 < 10 ms",
        p99["rules"] < 10,
    )
    record(
        "rules",
        "  the rules' own cost (with 200 less without)",
        f"p99 {p99['rules'] - p99['plain']:+.1f} ms",
        f"p50 {p50['rules'] - p50['plain']:+.1f} ms",
        "—",
        f"load {os.getloadavg()[0]:.2f}",
    )
    record(
        "rules",
        "  the stack's floor, same server and client: p99",
        f"{p99['get']:.1f} ms GET traits",
        f"{p99['healthz']:.1f} ms GET /healthz",
        f"p50 {p50['get']:.1f} / {p50['healthz']:.1f}",
    )


def bench_trait_updates(env, size: int, read_users: int) -> None:
    """The trait update part of bench_rules alone (``--only trait_updates``): its two databases
    and servers, the PATCH rows. Quick to run while working on a trait write's latency."""
    plain_db, rules_db = _rules_databases(env, size, read_users)
    envs = {
        name: {**env, "DATABASE_URL": db_url(name), "RATELIMIT_WRITE": ""} for name in (plain_db, rules_db)
    }
    servers = {name: Server(name, "wsgi:app", envs[name], Users(1, read_users), name) for name in envs}
    with contextlib.ExitStack() as stack:
        _serve_all(stack, servers)
        _trait_updates(servers[rules_db], servers[plain_db], size)
    for name in envs:
        drop_database(name)


def _serve_all(stack: contextlib.ExitStack, servers: dict[str, Server]) -> None:
    """Each server under gunicorn on a free port (``url`` and ``pid`` set), all answering."""
    for server in servers.values():
        port = tools.free_port()
        server.pid = stack.enter_context(tools.gunicorn(server.target, server.env, port, wait=False)).pid
        server.url = f"http://127.0.0.1:{port}"
    for server in servers.values():
        tools.wait_http(f"{server.url}/api/v1/users/1/segments", 300)  # (a loaded machine boots slowly)


def bench_rules(env, size: int, read_users: int, seconds: int, rounds: int) -> None:
    """Rule segments (issue 29, stages 2-3). Two databases, each with ``size`` users' traits,
    200 rollout segments at 10% and 10 explicit memberships per user for ``read_users`` users
    (the read section's shape); one also has 200 segments in rule mode whose rows give each of
    those users about 20 rule matches, the other 200 more rollout segments at 10% instead (about
    20 memberships each too: the answers are the same size, the members come by rows or by hash).

    - the hot read (wrk, rotating users, 10 connections) on both, measured in turns;
    - a trait update (PATCH /users/<id>/traits, one client) on both: p99 with 200 rule segments
      evaluated against none;
    - a rule change over ``size`` users (POST a segment with rules: its re-evaluation operation
      on an RQ worker), end to end, against the floor (PostgreSQL alone inserting the same rule
      rows and their history rows in one transaction), and others' reads' p99 during it against
      idle."""
    plain_db, rules_db = _rules_databases(env, size, read_users)
    engines = dict.fromkeys((plain_db, rules_db))
    envs = {name: {**env, "DATABASE_URL": db_url(name), "RATELIMIT_WRITE": ""} for name in engines}
    servers = {name: Server(name, "wsgi:app", envs[name], Users(1, read_users), name) for name in engines}
    with contextlib.ExitStack() as stack:
        _serve_all(stack, servers)
        for server in servers.values():
            server.users.run(server.url, 10, 1)
        for _ in range(rounds):
            for server in servers.values():
                server.runs.setdefault(10, []).append(server.users.run(server.url, 10, seconds))
        plain, ruled = (servers[name].load(10) for name in (plain_db, rules_db))
        record(
            "rules",
            f"hot read, 200 rule segments (~20 rule rows a user), {read_users:,} users, 10 conn",
            f"{ruled.rps:,.0f} req/s p99 {ruled.p99_ms:.1f} ms",
            f"{plain.rps:,.0f} req/s p99 {plain.p99_ms:.1f} ms, 200 more rollouts instead",
            f"{ruled.rps / plain.rps:.2f}",
            ">= 0.90 (issue 29: the hot read unchanged)",
            ruled.rps / plain.rps >= 0.9,
        )
        _trait_updates(servers[rules_db], servers[plain_db], size)

        # a rule change over every user with traits, with others reading meanwhile
        base = servers[plain_db].url
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def reader() -> None:
            r = random.Random(7)
            while not stop.is_set():
                started = time.perf_counter()
                _call(f"{base}/api/v1/users/{r.randint(1, read_users)}/segments", "GET", timeout=30)
                finished = time.perf_counter()
                samples.append((finished, finished - started))
                time.sleep(0.005)

        rules = [{"conditions": [{"trait": "country", "operator": "str_in", "values": ["RU", "BY"]}]}]
        with tools.rq_worker(envs[plain_db]):
            threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
            for thread in threads:
                thread.start()
            try:
                idle_from = time.perf_counter()
                time.sleep(5)
                started = time.perf_counter()
                created = _call(base + "/api/v1/segments", "POST", {"slug": "RULE_CHANGE", "rules": rules})
                assert "reevaluation" in created, created
                state = wait_operation(created["reevaluation"]["status_url"], timeout=1800)
                ended = time.perf_counter()
            finally:
                stop.set()
                for thread in threads:
                    thread.join(60)
        assert state["status"] == "finished" and state["error"] is None, state
        took = ended - started
        engine = sa.create_engine(db_url(plain_db))
        with engine.connect() as conn:
            matched = conn.scalar(sa.text("SELECT count(*) FROM rule_matches"))
            assert matched == state["added"], (matched, state)
        with engine.connect() as conn:  # the floor: the same rows and history rows, one transaction
            floor_started = time.perf_counter()
            with conn.begin() as tx:
                conn.execute(sa.text("CREATE TEMP TABLE floor_matches (LIKE rule_matches INCLUDING ALL)"))
                conn.execute(
                    sa.text(
                        "INSERT INTO floor_matches SELECT user_id, 1, now() FROM user_traits "
                        "WHERE traits->>'country' IN ('RU', 'BY') ORDER BY user_id"
                    )
                )
                conn.execute(
                    sa.text(
                        EVENTS + "SELECT user_id, 1, 'RULE_CHANGE', 'added', 'rule', now(), 'bench', true "
                        "FROM floor_matches"
                    )
                )
                floor = time.perf_counter() - floor_started
                tx.rollback()
        engine.dispose()
        record(
            "rules",
            f"rule change over {size:,} users with traits ({matched:,} match): re-evaluated",
            f"{took:.1f} s",
            f"{floor:.1f} s floor (the rows + history in SQL)",
            f"{took / floor:.1f}x",
            "< 30 s",
            took < 30,
        )
        idle = [t for at, t in samples if idle_from <= at < started]
        during = [t for at, t in samples if started <= at <= ended]
        idle_p99, during_p99 = _pct_ms(idle, 0.99), _pct_ms(during, 0.99)
        record(
            "rules",
            "others' reads' p99 during the re-evaluation",
            f"{during_p99:.1f} ms ({len(during):,} reads)",
            f"{idle_p99:.1f} ms idle ({len(idle):,} reads)",
            f"{during_p99 / idle_p99:.1f}x",
            "<= 2x",
            during_p99 <= 2 * idle_p99,
        )
    for name in engines:
        drop_database(name)


def bench_bulk_profile(env, size: int) -> None:
    """Where the add's time goes: the service functions in-process (the worker's loop:
    run_chunk + commit per chunk) on the same database, each statement timed by kind."""
    _, _, out = tools.run_child(_PROFILE.replace("COUNT", str(size)), env)
    got = json.loads(out.splitlines()[-1])
    chunks, loop = got["chunks"], got["loop"]
    sql = sum(got["spent"].values())
    record(
        "profile",
        f"add of {size:,} ids in-process: request part (validate, COPY ids)",
        f"{got['request']:.2f} s",
        "—",
        "—",
    )
    record(
        "profile",
        f"  chunk loop: {chunks} chunks (+ finish {got['finish']:.2f} s)",
        f"{loop:.2f} s",
        f"{loop / chunks * 1000:.1f} ms/chunk",
        "100%",
    )
    for kind, seconds in sorted(got["spent"].items(), key=lambda kv: -kv[1]):
        record(
            "profile",
            f"    {kind[:48]} x{got['calls'][kind]}",
            f"{seconds:.2f} s",
            f"{seconds / chunks * 1000:.1f} ms/chunk",
            f"{seconds / loop:.0%}",
        )
    record(
        "profile",
        "    COMMIT (WAL flush)",
        f"{got['commit']:.2f} s",
        f"{got['commit'] / chunks * 1000:.1f} ms/chunk",
        f"{got['commit'] / loop:.0%}",
    )
    python = loop - sql - got["commit"]
    record(
        "profile",
        "    Python between statements (ORM, app)",
        f"{python:.2f} s",
        f"{python / chunks * 1000:.1f} ms/chunk",
        f"{python / loop:.0%}",
    )


def _call(url: str, method: str, body: object = None, timeout: float = 300) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return {"http_status": exc.code}


OTHERS_IDLE = 6.0  # s: the same clients with nothing running, just before each operation
OTHERS_CLIENTS = 3  # threads adding, reading and removing users (the operation's segment and another)


class Others:
    """Other clients while big operations run (issue 28, item 3): OTHERS_CLIENTS threads each
    adding a random user to the operation's segment and another one, reading that user's
    segments and removing the user from the operation's segment (20 ms apart), and one hot
    reader (GET /api/v1/users/<id>/segments, a random user every 5 ms). Every request is timed;
    a window's p99 is compared with the same clients' p99 over the OTHERS_IDLE seconds before
    the operation started (same run, same load, same clients)."""

    def __init__(self, base: str, segments: tuple[str, str], users: int, engine=None) -> None:
        self.base, self.segments, self.users, self.engine = base, segments, users, engine
        self.samples: list[tuple[float, float, str, int]] = []  # (finished at, seconds, kind, status)
        # (at, backends waiting for an advisory lock, autovacuum workers in the database)
        self.waits: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(OTHERS_CLIENTS)
        ]
        self.threads.append(threading.Thread(target=self._hot, daemon=True))
        if engine is not None:
            self.threads.append(threading.Thread(target=self._lock_waits, daemon=True))

    def _timed(self, kind: str, method: str, path: str, body: object = None) -> None:
        started = time.perf_counter()
        try:
            answer = _call(self.base + path, method, body, timeout=60)
            status = answer.get("http_status", 200)
        except Exception:  # a timeout or a dropped connection counts as a server failure
            status = 599
        finished = time.perf_counter()
        self.samples.append((finished, finished - started, kind, status))

    def _client(self, seed: int) -> None:
        rng, (busy, other) = random.Random(seed), self.segments
        while not self.stop.is_set():
            user = rng.randint(1, self.users)
            self._timed("write", "POST", f"/api/v1/users/{user}/segments", {"add": [busy, other]})
            self._timed("read", "GET", f"/api/v1/users/{user}/segments")
            self._timed("write", "POST", f"/api/v1/users/{user}/segments", {"del": [busy]})
            time.sleep(0.02)

    def _lock_waits(self) -> None:
        """Every 10 ms: how many backends wait for an advisory lock (the segments' bulk locks:
        a per-user write waiting out a chunk; the operation's own chunk waiting for a write),
        and how many autovacuum workers run in the database (the dead rows an operation leaves
        are vacuumed meanwhile, on the same cores)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            query = sa.text(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'), "
                "count(*) FILTER (WHERE backend_type = 'autovacuum worker') "
                "FROM pg_stat_activity WHERE datname = current_database()"
            )
            while not self.stop.is_set():
                waiting, vacuuming = conn.execute(query).one()
                self.waits.append((time.perf_counter(), int(waiting or 0), int(vacuuming or 0)))
                time.sleep(0.01)

    def waited(self, start: float, end: float) -> str:
        """The share of samples in [start, end] with a backend waiting for an advisory lock, and
        with an autovacuum worker running."""
        mine = [(n, v) for at, n, v in self.waits if start <= at <= end]
        if not mine:
            return ""
        waits = 100 * sum(1 for n, _ in mine if n) / len(mine)
        vacuum = 100 * sum(1 for _, v in mine if v) / len(mine)
        return f"; advisory lock waits in {waits:.1f}% of {len(mine)} samples, autovacuum in {vacuum:.1f}%"

    def _hot(self) -> None:
        rng = random.Random(99)
        while not self.stop.is_set():
            self._timed("hot", "GET", f"/api/v1/users/{rng.randint(1, self.users)}/segments")
            time.sleep(0.005)

    def __enter__(self) -> Others:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def window(
        self, start: float, end: float, hot: bool = False, kind: str | None = None
    ) -> tuple[float, int, int]:
        """(p99 ms, requests, 5xx) of the others' (or the hot reader's; or one ``kind``'s)
        requests finished in [start, end]."""
        mine = [
            (t, s)
            for at, t, k, s in self.samples
            if start <= at <= end and ((k == "hot") == hot if kind is None else k == kind)
        ]
        values = sorted(t for t, _ in mine)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000 if values else float("nan")
        return p99, len(values), sum(1 for _, s in mine if s >= 500)

    def measure(self, name: str, operation, rss: Callable[[], str]) -> tuple[float, float]:
        """Run ``operation`` (returns when it has finished) after an idle window; record its row."""
        idle_start = time.perf_counter()
        time.sleep(OTHERS_IDLE)
        start = time.perf_counter()
        inner = operation()  # (a child process's job: the job's own start and end, same clock)
        end = time.perf_counter()
        idle, idle_n, idle_5xx = self.window(idle_start, start)
        if inner:
            start, end = inner
        during, n, errors = self.window(start, end)
        hot_idle, _, _ = self.window(idle_start, start, hot=True)
        hot, hot_n, hot_5xx = self.window(start, end, hot=True)
        reads, reads_idle = (
            self.window(start, end, kind="read")[0],
            self.window(idle_start, start, kind="read")[0],
        )
        writes, writes_idle = (
            self.window(start, end, kind="write")[0],
            self.window(idle_start, start, kind="write")[0],
        )
        ratio = during / idle
        record(
            "others",
            f"during {name} ({end - start:.1f} s): others' p99, {n} requests",
            f"{during:.1f} ms (writes {writes:.1f}, idle {writes_idle:.1f}: {writes / writes_idle:.2f}x; "
            f"reads {reads:.1f}, idle {reads_idle:.1f}), "
            f"5xx {errors + hot_5xx}; hot read p99 {hot:.1f} ms ({hot_n} reads, idle {hot_idle:.1f} ms)"
            f"{self.waited(start, end)}; {rss()}",
            f"{idle:.1f} ms idle ({idle_n} requests)",
            f"{ratio:.2f}x",
            "<= 2x idle, no 5xx",
            ratio <= 2 and errors + hot_5xx + idle_5xx == 0,
        )
        return ratio, end - start


def bench_others(
    engine,
    env,
    size: int,
    settings: dict[str, str] | None = None,
    label: str = "",
    chunked_only: bool = False,
) -> dict:
    """Each big operation of ``size`` ids (add, replace, remove, delete a segment, purge, report)
    with other clients running (class Others): their p99 against their idle p99, 5xx, the hot
    read's p99, and peak RSS of the web workers and of the worker's processes. ``settings``: env
    for the app and worker (BULK_CHUNK, BULK_PAUSE_MS, BULK_PAUSE_RATIO) when comparing them (the
    trade-off: the chunked operations and the purge)."""
    port = tools.free_port()
    # (the clients share one address: the per-address write limit would refuse them, and the
    # operations' own requests, as it would not refuse that many real clients)
    env = {**env, "RATELIMIT_WRITE": "", **(settings or {})}
    timings: dict[str, tuple[float, float]] = {}
    with tools.gunicorn("wsgi:app", env, port) as server, tools.rq_worker(env) as worker:
        base = f"http://127.0.0.1:{port}"
        for slug in ("OTHERS_BIG", "OTHERS_SMALL", "OTHERS_DEL"):
            _call(base + "/api/v1/segments", "POST", {"slug": slug})
        workers = tools.worker_pids(server.pid)
        job_rss: list = []

        def rss_text() -> str:
            return f"RSS web {tools.peak_rss_mb(workers):.0f} MB / worker {job_rss[-1].mb:.0f} MB"

        def bulk(method: str, path: str, ids: list[int] | None) -> Callable[[], None]:
            def run() -> None:
                tools.reset_peak_rss(workers)
                with tools.PeakRss(tools.process_tree(worker.pid)) as peak:
                    answer = _call(base + path, method, {"user_ids": ids} if ids is not None else None)
                    assert "http_status" not in answer, answer
                    url = answer.get("status_url") or answer.get("operation_url")
                    if url:
                        state = wait_operation(url, timeout=900)
                        assert state["status"] == "finished", state
                job_rss.append(peak)

            return run

        def child(code: str) -> Callable[[], tuple[float, float]]:
            def run() -> tuple[float, float]:
                tools.reset_peak_rss(workers)
                _, mb, out = tools.run_child(code, env)
                job_rss.append(types.SimpleNamespace(mb=mb))
                started, finished = out.split()[-2:]  # (perf_counter: CLOCK_MONOTONIC, one clock for all)
                return float(started), float(finished)

            return run

        listed = list(range(size // 2 + 1, size // 2 + size + 1))
        with Others(base, ("OTHERS_BIG", "OTHERS_SMALL"), 2 * size, engine) as others:
            time.sleep(2)  # (warm-up)
            for name, operation in (
                (
                    f"a {size:,}-id bulk add",
                    bulk("POST", "/api/v1/segments/OTHERS_BIG/members", list(range(1, size + 1))),
                ),
                (f"a {size:,}-id replace", bulk("PUT", "/api/v1/segments/OTHERS_BIG/members", listed)),
                (f"a {size:,}-id remove", bulk("DELETE", "/api/v1/segments/OTHERS_BIG/members", listed)),
            ):
                timings[name.split()[-1]] = others.measure(name + label, operation, rss_text)
            bulk("POST", "/api/v1/segments/OTHERS_DEL/members", list(range(1, size + 1)))()  # (not measured)
            timings["delete"] = others.measure(
                f"the delete of a {size:,}-member segment" + label,
                bulk("DELETE", "/api/v1/segments/OTHERS_DEL", None),
                rss_text,
            )
            with engine.begin() as conn:
                _seed_expired(conn, "OTHERS_TTL", 50_000_000, size)
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
            timings["purge"] = others.measure(
                f"the purge of {size:,} expired" + label,
                child(
                    "from webapp import create_app\nfrom webapp.platform.extensions import db\n"
                    "from webapp.jobs.tasks import purge_expired\nimport time\napp = create_app()\n"
                    "with app.app_context():\n    t = time.perf_counter()\n    purge_expired()\n"
                    "    db.session.commit()\n    print(t, time.perf_counter())"
                ),
                rss_text,
            )
            if chunked_only:  # (the trade-off: the pacing settings change nothing below)
                return timings
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
                        "SELECT 30000000 + g % 500000, 1, 'OTHERS_REPORT', 'added', 'api', "
                        "'2025-03-01'::timestamptz + (g * interval '2 seconds'), 'bench' FROM generate_series(1, :n) g"
                    ),
                    {"n": size},
                )
                conn.execute(sa.text("ANALYZE membership_events"))
            timings["report"] = others.measure(
                f"a report of {size:,} history rows" + label,
                child(
                    "from webapp import create_app\nfrom webapp.platform.extensions import db\n"
                    "from webapp.services.history import reports\nfrom webapp.jobs.tasks import generate_report\n"
                    "app = create_app()\n"
                    "reports.enqueue_report = lambda report: None  # (this child runs it: none for the worker)\n"
                    "with app.app_context():\n"
                    "    r = reports.request_report(db.session, period='2025-03')\n    db.session.commit()\n"
                    "    import time\n    t = time.perf_counter()\n    generate_report(str(r.id))\n"
                    "    print(t, time.perf_counter())"
                ),
                rss_text,
            )
    return timings


def _pacing(setting: str) -> tuple[int, int, float]:
    """A --tradeoff setting, BULK_CHUNK:BULK_PAUSE_MS[:BULK_PAUSE_RATIO]."""
    chunk, pause, *ratio = setting.split(":")
    return int(chunk), int(pause), float(ratio[0]) if ratio else 0.0


def bench_others_alone(engine, env, size: int) -> None:
    """The others section without the rest of the bulk one (``--only others``): the floors first
    (bulk_floors, same database), then each chunked operation's time with others running against
    its floor. (The others' replace replaces half of a segment's members; its floor all of them.)"""
    floors = bulk_floors(engine, size)
    timings = bench_others(engine, env, size)
    for name in ("add", "replace", "remove", "delete"):
        _, seconds = timings[name]
        record_big(
            f"{name} of {size:,} ids with others running (request -> finished)",
            seconds,
            "",
            floors[name],
            "bulk_floors",
            section="others",
        )


def bench_parse(count: int) -> None:
    """The bulk-add parser (webapp/web/id_lists.py) on a file of ``count`` ids."""
    import io

    from webapp.web.id_lists import parse_file

    data = ("user_id\n" + "\n".join(str(10_000_000 + i) for i in range(count))).encode()
    seconds, parsed = tools.timed(lambda: parse_file(io.BytesIO(data), "ids.csv", count))
    assert len(parsed.ids) == count
    record(
        "bulk",
        f"parse a file of {count:,} ids (id_lists.parse_file)",
        f"{seconds:.2f} s",
        "—",
        "—",
        "< 5 s",
        seconds < 5,
    )


def bench_set_based(env, count: int) -> None:
    """What the set-based write bought: ``count`` adds as one statement vs one call per user."""
    code = """
import time
import types
from webapp import create_app
from webapp.platform.extensions import db
from webapp.models.enums import Reason
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments
from webapp.services.membership import user_changes
app = create_app()
with app.app_context():
    segments.create_segment(db.session, "PER_ROW"); segments.create_segment(db.session, "SET_BASED"); db.session.commit()
    ids = list(range(50_000_000, 50_000_000 + COUNT))
    t = time.perf_counter()
    for uid in ids:
        user_changes.change_user_segments(db.session, uid, [user_changes.AddSpec("PER_ROW")], [], reason=Reason.API)
        db.session.commit()
    per_row = time.perf_counter() - t
    t = time.perf_counter()
    bulk.bulk_add(db.session, "SET_BASED", ids); db.session.commit()
    print(per_row, time.perf_counter() - t)
"""
    _, _, out = tools.run_child(code.replace("COUNT", str(count)), env)
    per_row, set_based = map(float, out.split())
    record(
        "bulk",
        f"{count:,} adds: one set-based statement",
        f"{set_based * 1000:.0f} ms",
        f"{per_row * 1000:.0f} ms per-user calls",
        f"{per_row / set_based:.0f}x faster",
    )


@dataclass
class Users:
    """The users a server's runs rotate over: first..first+count-1, each run starting where its
    last one stopped, so that no request repeats a user until ``count`` requests have been made."""

    first: int
    count: int
    used: int = 0

    def args(self, connections: int) -> list[int]:
        return [
            self.first,
            self.count,
            tools.permutation_step(self.count),
            self.used,
            tools.wrk_threads(connections),
        ]

    def run(self, url: str, connections: int, seconds: int, meter=None, extra=()) -> tools.Load:
        """``extra``: the script's optional arguments (path, authorization, body)."""
        load = tools.wrk(url, connections, seconds, ROTATING, [*self.args(connections), *extra], meter)
        self.used += load.requests + tools.wrk_threads(connections)  # (+ threads: the strides' offsets)
        return load


@dataclass
class Server:
    """One gunicorn of the read section, its users, the database its workers read, its runs."""

    name: str
    target: str
    env: dict
    users: Users
    database: str | None  # None: the floor reads no database
    url: str = ""
    pid: int = 0
    runs: dict = field(default_factory=dict)  # connections -> [Load, ...] (one per round)

    def meter(self, postmaster: int, redis: PrivateRedis) -> tools.CpuMeter:
        """CPU of this gunicorn (master + workers), of the PostgreSQL backends connected to its
        database (its workers' connections; the bench's own are idle meanwhile) and of Redis."""
        groups = {"app": tools.process_tree(self.pid)}
        if self.database is not None:
            groups["pg"] = tools.postgres_backends(postmaster, self.database)
        groups["redis"] = tools.process_tree(redis.process.pid)
        return tools.CpuMeter(groups)

    def load(self, connections: int) -> tools.Load:
        return tools.combine(self.runs[connections])


def _cpu(load: tools.Load) -> str:
    """CPU per request by process group, and how busy the machine was (others: processes that are
    none of gunicorn, its database backends, Redis, wrk and this bench)."""
    per = {name: seconds * 1000 / max(load.requests, 1) for name, seconds in load.cpu.items()}
    parts = " + ".join(f"{name} {ms:.2f}" for name, ms in per.items() if ms >= 0.005)
    capacity = load.machine["elapsed"] * (os.cpu_count() or 1) / 100
    return (
        f"{load.cpu_ms_per_request():.2f} ms/req ({parts}); machine {load.machine['busy'] / capacity:.0f}% "
        f"busy, others {max(0.0, load.machine['others']) / capacity:.0f}%"
    )


def _postmaster(engine) -> int:
    with engine.connect() as conn:
        return tools.psutil.Process(conn.scalar(sa.text("SELECT pg_backend_pid()"))).ppid()


def bench_read(env, redis, seconds: int, rounds: int, small_users: int, large_users: int) -> None:
    """GET /api/v1/users/<id>/segments, a different user on every request (bench/rotating_users.lua).

    200 rollout segments at 10% and 10 explicit memberships for every user in the range, in two
    databases: ``small_users`` users and ``large_users`` users (10 rows each, COPY-ed). The floor:
    bench/baseline_app.py (a constant JSON view) under the same gunicorn config with the same wrk
    script. All the servers run at once (idle when not measured) and are measured in turns,
    ``rounds`` runs of ``seconds`` each, so that a change in the machine's other load affects all
    of them alike; a server's figure is the sum of its runs (p50 and p99 from their merged
    latency histograms)."""
    large_db = f"{DB}_large"
    engines = {}
    loaded = {}
    for name, users in ((DB, small_users), (large_db, large_users)):
        engine = engines[name] = fresh_database(env, name)
        make_segments(engine, "R", 200, 1000)
        make_segments(engine, "P", 10, 0)
        loaded[name] = copy_memberships(engine, "P", 1, users)
    rows, size = {}, {}
    for name, engine in engines.items():
        with engine.connect() as conn:
            rows[name] = conn.scalar(sa.text("SELECT count(*) FROM memberships"))
            size[name] = conn.scalar(sa.text("SELECT pg_size_pretty(pg_total_relation_size('memberships'))"))
        record(
            "read",
            f"load: COPY {rows[name]:,} memberships ({size[name]}) + VACUUM ANALYZE",
            f"{loaded[name]:.1f} s",
            "—",
            "—",
        )
    postmaster = _postmaster(engines[DB])
    for engine in engines.values():
        engine.dispose()

    small_env = {**env, "DATABASE_URL": db_url(DB)}
    servers = [
        Server("floor", "bench.baseline_app:app", env, Users(1, small_users), None),
        Server("small", "wsgi:app", small_env, Users(1, small_users), DB),
        Server(
            "large", "wsgi:app", {**env, "DATABASE_URL": db_url(large_db)}, Users(1, large_users), large_db
        ),
        Server(
            "limited",
            "wsgi:app",
            {**small_env, "RATELIMIT_HOT_PATH": "1000000/second"},
            Users(1, small_users, used=small_users // 2),
            DB,
        ),
    ]
    conns = {10: servers, 50: servers[:3]}
    with contextlib.ExitStack() as stack:
        for server in servers:  # started together, then waited for
            port = tools.free_port()
            server.pid = stack.enter_context(tools.gunicorn(server.target, server.env, port, wait=False)).pid
            server.url = f"http://127.0.0.1:{port}"
        for server in servers:
            tools.wait_http(f"{server.url}/api/v1/users/1/segments", 60)
            server.users.run(server.url, 10, 1)  # warm-up: every worker's connection and catalog
        for conc, measured in conns.items():
            for _ in range(rounds):
                for server in measured:
                    load = server.users.run(server.url, conc, seconds, server.meter(postmaster, redis))
                    server.runs.setdefault(conc, []).append(load)
        lookups = {
            name: bench_lookup(server.url, server.users.count)
            for name, server in (("small", servers[1]), ("large", servers[2]))
        }
        # (bench_lookup's 3 warm-up rounds bring the keys' upper levels back, as a restarted
        # server's first requests would; each measured round then reads 1,000 other users' leaves)
        evicted = (
            bench_lookup(servers[2].url, servers[2].users.count)
            if evict_hot_relations(engines[large_db])
            else None
        )
    drop_database(large_db)

    floor, small, large, limited = servers
    for conc in conns:
        base = floor.load(conc)
        record(
            "read",
            f"floor: constant JSON view, rotating ids, {conc} conn",
            f"{base.rps:,.0f} req/s p99 {base.p99_ms:.1f} ms",
            "—",
            "1.00",
        )
        record("read", f"  CPU, floor, {conc} conn", _cpu(base), "—", "—")
        p99_limit = 10 if conc == 10 else 50
        for server in (small, large):
            load = server.load(conc)
            ratio = load.rps / base.rps
            ok = ratio >= 0.5 and load.p99_ms < p99_limit and load.errors == 0
            label = f"{server.users.count:,} users ({rows[server.database]:,} rows)"
            record(
                "read",
                f"GET rotating over {label}, {conc} conn",
                f"{load.rps:,.0f} req/s p99 {load.p99_ms:.1f} ms"
                + (f", {load.errors} errors" if load.errors else ""),
                f"{base.rps:,.0f} req/s floor",
                f"{ratio:.2f}",
                f">= 0.50, p99 < {p99_limit} ms",
                ok,
            )
            record(
                "read",
                f"  CPU, {server.users.count:,} users, {conc} conn",
                _cpu(load),
                f"{base.cpu_ms_per_request():.2f} ms/req floor",
                f"{load.cpu_ms_per_request() / max(base.cpu_ms_per_request(), 1e-9):.1f}x",
            )
            repeats = max(r.requests for r in server.runs[conc]) > server.users.count
            if repeats:
                print(f"  (note: a run made more requests than {server.users.count:,} users: some repeated)")
        ratio = large.load(conc).rps / small.load(conc).rps
        record(
            "read",
            f"{rows[large_db]:,} vs {rows[DB]:,} memberships, {conc} conn",
            f"{large.load(conc).rps:,.0f} req/s",
            f"{small.load(conc).rps:,.0f} req/s",
            f"{ratio:.2f}",
            ">= 0.85",
            ratio >= 0.85,
        )
    for name, (batch, singles) in lookups.items():
        server = small if name == "small" else large
        label = f"{server.users.count:,} users"
        record(
            "read",
            f"POST lookup of 1,000 users ({label}), median of 40",
            f"p50 {statistics.median(batch) * 1e3:.1f} ms max {max(batch) * 1e3:.1f} ms",
            f"{sum(singles) * 1e3:,.0f} ms for 1,000 GETs",
            f"{statistics.median(batch) / sum(singles):.3f}",
            "p50 < 20 ms",
            statistics.median(batch) < 0.020,
        )
    if evicted is None:
        print(
            "  (the lookup with the hot relations evicted first: not measured, this server has no "
            "pg_buffercache_evict_relation)",
            flush=True,
        )
    else:  # (the same 1,000-user samples, their pages from the OS page cache)
        cold, warm = statistics.median(evicted[0]), statistics.median(lookups["large"][0])
        record(
            "read",
            f"  the same, {large.users.count:,} users, hot relations evicted from shared_buffers first",
            f"p50 {cold * 1e3:.1f} ms max {max(evicted[0]) * 1e3:.1f} ms",
            f"p50 {warm * 1e3:.1f} ms in them",
            f"{cold / warm:.2f}",
            "(a restart without autoprewarm)",
        )
    plain, limit = small.load(10), limited.load(10)
    record(
        "read",
        "rate limiter on (RATELIMIT_HOT_PATH=1000000/second), 10 conn",
        f"{limit.rps:,.0f} req/s p99 {limit.p99_ms:.1f} ms",
        f"{plain.rps:,.0f} req/s none",
        f"{limit.rps / plain.rps:.2f}",
    )
    record(
        "read",
        "  CPU, rate limiter on, 10 conn",
        _cpu(limit),
        f"{plain.cpu_ms_per_request():.2f} ms/req none",
        f"{limit.cpu_ms_per_request() / plain.cpu_ms_per_request():.2f}",
    )


def read_workload(env, name: str, users: int) -> int:
    """A fresh database ``name`` with the read workload (200 rollout segments at 10%, 10 explicit
    memberships for each of ``users`` users, COPY-ed); the server's postmaster pid."""
    engine = fresh_database(env, name)
    make_segments(engine, "R", 200, 1000)
    make_segments(engine, "P", 10, 0)
    copy_memberships(engine, "P", 1, users)
    postmaster = _postmaster(engine)
    engine.dispose()
    return postmaster


OFREP_FLAG = "P0003"  # an explicit-membership segment of every user in range (make_segments "P")
OFREP_BODY = '{"context":{"targetingKey":"%d"}}'


def bench_ofrep(env, redis, seconds: int, rounds: int, users: int, conns: int = 10) -> None:
    """OpenFeature's single evaluation, ``POST /ofrep/v1/evaluate/flags/<key>`` with the user in
    the body, beside the hot read ``GET /api/v1/users/<id>/segments``: one gunicorn (wsgi:app) on
    the read section's small database (200 rollout segments at 10%, 10 explicit memberships for
    each of ``users`` users), the same users rotating (a different one on every request),
    ``conns`` connections, ``rounds`` interleaved runs of ``seconds`` each (main: twice the read
    section's, as the two figures are compared with each other); a figure is the sum of its
    runs. Target: the evaluation at 0.9 x the hot read's req/s or more (issue 26). Beside
    them, the floor (bench/baseline_app.py: constant answers) by GET and by POST with the same
    body, every other round: what the protocol's POST costs by itself under gunicorn and wrk."""
    postmaster = read_workload(env, DB, users)
    server = Server("ofrep", "wsgi:app", {**env, "DATABASE_URL": db_url(DB)}, Users(1, users), DB)
    floor = Server("floor", "bench.baseline_app:app", env, Users(1, users), None)
    evaluations, floor_posts = (Users(1, users, used=users // 2) for _ in range(2))  # (other half first)
    flag = ("/ofrep/v1/evaluate/flags/" + OFREP_FLAG, "", OFREP_BODY)
    reads, evals, floor_gets, floor_evals = [], [], [], []

    def measure(target: Server, users_asked: Users, into: list, extra=()) -> None:
        meter = target.meter(postmaster, redis)
        into.append(users_asked.run(target.url, conns, seconds, meter, extra))

    with contextlib.ExitStack() as stack:
        for target in (server, floor):
            port = tools.free_port()
            target.pid = stack.enter_context(tools.gunicorn(target.target, target.env, port)).pid
            target.url = f"http://127.0.0.1:{port}"
        answer = post(
            f"{server.url}/ofrep/v1/evaluate/flags/{OFREP_FLAG}",
            json.dumps({"context": {"targetingKey": "1"}}).encode(),
            {"Content-Type": "application/json"},
        )
        assert answer["value"] is True and answer["reason"] == "TARGETING_MATCH", answer
        for target, posts in ((server, evaluations), (floor, floor_posts)):
            target.users.run(target.url, conns, 1)  # warm-up: every worker's connection and catalog
            posts.run(target.url, conns, 1, extra=flag)
        for turn in range(rounds):  # interleaved, in alternating order
            runs = [
                lambda: measure(server, server.users, reads),
                lambda: measure(server, evaluations, evals, flag),
            ]
            if turn % 2 == 0:  # the floor, every other round: GET and POST
                runs += [
                    lambda: measure(floor, floor.users, floor_gets),
                    lambda: measure(floor, floor_posts, floor_evals, flag),
                ]
            for run in runs if turn % 4 < 2 else runs[::-1]:
                run()
    drop_database(DB)
    read, evaluation = tools.combine(reads), tools.combine(evals)
    floor_get, floor_post = tools.combine(floor_gets), tools.combine(floor_evals)
    record(
        "ofrep",
        f"floor: a constant view by GET, by POST with the same body, {conns} conn",
        f"{floor_post.rps:,.0f} req/s POST p99 {floor_post.p99_ms:.1f} ms",
        f"{floor_get.rps:,.0f} req/s GET",
        f"{floor_post.rps / floor_get.rps:.2f}",
        "(a POST with a body by itself)",
    )
    record(
        "ofrep",
        f"GET hot read, rotating over {users:,} users, {conns} conn",
        f"{read.rps:,.0f} req/s p99 {read.p99_ms:.1f} ms"
        + (f", {read.errors} errors" if read.errors else ""),
        "—",
        "1.00",
    )
    ratio = evaluation.rps / read.rps
    record(
        "ofrep",
        f"POST /ofrep/v1/evaluate/flags/{OFREP_FLAG}, same users, {conns} conn",
        f"{evaluation.rps:,.0f} req/s p99 {evaluation.p99_ms:.1f} ms"
        + (f", {evaluation.errors} errors" if evaluation.errors else ""),
        f"{read.rps:,.0f} req/s hot read",
        f"{ratio:.2f}",
        ">= 0.90",
        ratio >= 0.90 and evaluation.errors == 0,
    )
    record(
        "ofrep",
        f"  CPU, OFREP evaluation, {conns} conn",
        _cpu(evaluation),
        f"{read.cpu_ms_per_request():.2f} ms/req hot read",
        f"{evaluation.cpu_ms_per_request() / max(read.cpu_ms_per_request(), 1e-9):.2f}",
    )


def bench_lookup(url: str, users: int, rounds: int = 40) -> tuple[list[float], list[float]]:
    """Seconds per POST /api/v1/users/segments:lookup of 1,000 random users (one keep-alive
    connection), and the baseline: the same 1,000 users read one GET at a time on it."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    rng = random.Random(11)
    batch = []
    for i in range(rounds + 3):
        ids = rng.sample(range(1, users + 1), 1000)
        body = json.dumps({"user_ids": ids})
        started = time.perf_counter()
        conn.request("POST", "/api/v1/users/segments:lookup", body, {"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        if i >= 3:  # after a warm-up
            batch.append(time.perf_counter() - started)
        assert answer.startswith(b'{"users":[{"user_id":'), answer[:200]
    singles = []
    for user in ids:
        started = time.perf_counter()
        conn.request("GET", f"/api/v1/users/{user}/segments")
        conn.getresponse().read()
        singles.append(time.perf_counter() - started)
    conn.close()
    return batch, singles


def bench_scaling(engine, env, seconds: int) -> None:
    make_segments(engine, "S", 1000, 0)
    port = tools.free_port()
    base_port = tools.free_port()
    with tools.gunicorn("bench.baseline_app:app", env, base_port):
        tools.wrk(f"http://127.0.0.1:{base_port}/api/v1/users/1/segments", 1, 1)
        base = tools.wrk(f"http://127.0.0.1:{base_port}/api/v1/users/1/segments", 1, seconds)
    with tools.gunicorn("wsgi:app", env, port):
        for count in (10, 100, 1000):
            with engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE segments SET rollout_basis_points = 0 WHERE rollout_basis_points > 0")
                )
                conn.execute(
                    sa.text(
                        "UPDATE segments SET rollout_basis_points = 1000 WHERE slug LIKE 'S%' AND slug <= :last"
                    ),
                    {"last": f"S{count - 1:04d}"},
                )
                catalog_changed(conn)
            url = f"http://127.0.0.1:{port}/api/v1/users/1/segments"
            tools.wrk(url, 1, 1)
            load = tools.wrk(url, 1, seconds)
            record(
                "scaling",
                f"GET user 1, {count} rollout segments, 1 conn",
                f"p50 {load.p50_ms:.2f} ms p99 {load.p99_ms:.2f} ms",
                f"p50 {base.p50_ms:.2f} ms baseline",
                f"{load.p50_ms / base.p50_ms:.1f}x",
            )
    # Rollout evaluation does not depend on how many users exist or how large the id is.
    code = """
import time
import types
import numpy as np
from webapp.services.rollout import buckets as rollout
keys = np.array([rollout.key(f"salt{i}") for i in range(200)], dtype=np.uint64)
for uid in (1, 10**6, 10**12, 10**18):
    t = time.perf_counter()
    for _ in range(2000):  # what the read path does per user: one hash, one vector of 200 buckets
        np.flatnonzero(rollout.mix_buckets(keys ^ np.uint64(rollout.user_hash(uid))) < 1000)
    print(uid, (time.perf_counter() - t) / 2000 * 1e6)
"""
    _, _, out = tools.run_child(code, env)
    timings = [line.split() for line in out.strip().splitlines()]
    first = float(timings[0][1])
    for uid, micros in timings:
        record(
            "scaling",
            f"evaluate 200 rollouts for user id {int(uid):.0e}",
            f"{float(micros):.0f} µs",
            f"{first:.0f} µs (id 1)",
            f"{float(micros) / first:.2f}",
        )
    with engine.begin() as conn:
        before = conn.scalar(
            sa.text("SELECT (SELECT count(*) FROM memberships) + (SELECT count(*) FROM rollout_changes)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO rollout_changes (segment_id, from_bp, to_bp, reason, changed_at) "
                "SELECT id, 1000, 2000, 'rollout', now() FROM segments WHERE rollout_basis_points = 1000"
            )
        )
        conn.execute(
            sa.text("UPDATE segments SET rollout_basis_points = 2000 WHERE rollout_basis_points = 1000")
        )
        catalog_changed(conn)
        after = conn.scalar(
            sa.text("SELECT (SELECT count(*) FROM memberships) + (SELECT count(*) FROM rollout_changes)")
        )
    record(
        "scaling",
        "rows written raising 1000 rollouts 10%→20%",
        f"{after - before:,} rows",
        "1 per segment",
        "—",
        "no per-user rows",
        after - before == 1000,
    )


def bench_dashboard(engine, env, count: int) -> None:
    """The segments page with many segments: first page, a deep page, a search (p50 of 30)."""
    make_segments(engine, "DASH_", count, 0)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    port = tools.free_port()
    with tools.gunicorn("wsgi:app", env, port):
        base = f"http://127.0.0.1:{port}"
        last = max(1, count // 25)
        cases = {
            "first page": "/",
            f"page {last} (last)": f"/?page={last}",
            "search 'DASH_09'": "/?q=DASH_09",
            "JSON list, page 1": "/api/v1/segments",
        }
        timings = {}
        for name, path in cases.items():
            samples = []
            for _ in range(30):
                seconds, _ = tools.timed(lambda p=path: get(base + p))
                samples.append(seconds * 1000)
            timings[name] = sorted(samples)[len(samples) // 2]
        health = sorted(tools.timed(lambda: get(base + "/healthz"))[0] * 1000 for _ in range(30))[15]
    for name, p50 in timings.items():
        record(
            "dashboard",
            f"{count:,} segments: {name}",
            f"p50 {p50:.1f} ms",
            f"p50 {health:.1f} ms /healthz",
            f"{p50 / health:.1f}x",
            "< 100 ms",
            p50 < 100,
        )


def _seed_expired(conn, slug: str, first_user: int, size: int) -> None:
    """A new segment ``slug`` with ``size`` memberships (users from ``first_user`` + 1) that
    expired over the last seconds and are not yet purged."""
    conn.execute(
        sa.text(
            "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
            "VALUES (:slug, '', 0, 'x', now())"
        ),
        {"slug": slug},
    )
    conn.execute(
        sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT :first + g, (SELECT id FROM segments WHERE slug = :slug), now() - interval '30 days', "
            "now() - (g || ' seconds')::interval FROM generate_series(1, :n) g"
        ),
        {"slug": slug, "first": first_user, "n": size},
    )


def bench_expiry(engine, env, size: int) -> None:
    with engine.begin() as conn:
        _seed_expired(conn, "TTL_BENCH", 20_000_000, size)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
    base_s = _floor(engine, None, _FLOOR_PURGE, {})
    seconds, rss, out = tools.run_child(
        "from webapp import create_app\nfrom webapp.platform.extensions import db\n"
        "from webapp.jobs.tasks import purge_expired\nimport time\n"
        "app = create_app()\nwith app.app_context():\n    t = time.perf_counter()\n"
        "    n = purge_expired()\n    db.session.commit()\n"
        "    print(n, time.perf_counter() - t)",
        env,
    )
    removed, inner = out.split()
    with engine.connect() as conn:
        events = conn.scalar(sa.text("SELECT count(*) FROM membership_events WHERE reason = 'ttl'"))
    assert int(removed) == size == events, (removed, events)
    record_big(
        f"purge {size:,} expired (+ {events:,} history rows)",
        float(inner),
        f", {rss:.0f} MB",
        base_s,
        "DELETE rows + history",
        section="expiry",
    )


def bench_report(engine, env, sizes: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
                "VALUES ('REPORT_BENCH', '', 0, 'x', now())"
            )
        )
    for month, size in zip(("2025-01", "2025-02"), sizes, strict=True):
        start = datetime.fromisoformat(month + "-01T00:00:00+00:00")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
                    "SELECT 30000000 + g % 500000, (SELECT id FROM segments WHERE slug = 'REPORT_BENCH'), 'REPORT_BENCH', "
                    "CASE WHEN g % 2 = 0 THEN 'added' ELSE 'removed' END, 'api', "
                    ":start + (g * interval '2 seconds'), 'bench' FROM generate_series(1, :n) g"
                ),
                {"start": start, "n": size},
            )
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE membership_events"))
        base_s, _ = tools.timed(lambda m=month: _copy_out(engine, m))
        seconds, rss, out = tools.run_child(
            "from webapp import create_app\nfrom webapp.platform.extensions import db\nfrom webapp.services.history import reports\n"
            "from webapp.jobs.tasks import generate_report\nimport time\napp = create_app()\n"
            "with app.app_context():\n"
            f"    r = reports.request_report(db.session, period='{month}')\n"
            "    db.session.commit()\n    t = time.perf_counter()\n"
            "    n = generate_report(str(r.id))\n    print(n, time.perf_counter() - t)",
            env,
        )
        rows, inner = out.split()
        assert int(rows) == size, (rows, size)
        record_big(
            f"CSV of {size:,} history rows (all users, one month)",
            float(inner),
            f", {rss:.0f} MB peak",
            base_s,
            "COPY (its SELECT) TO STDOUT",
            section="report",
            target="<= 2x floor, < 150 MB",
            ok=float(inner) <= 2 * base_s and rss < 150,
        )


def _copy_out(engine, month: str) -> None:
    raw = engine.raw_connection()
    try:
        with (
            raw.cursor() as cur,
            cur.copy(
                # the report's stored-history SELECT (services/history/reports.py: _all_history)
                "COPY (SELECT user_id, segment_slug, action, occurred_at, reason, actor FROM membership_events "
                f"WHERE occurred_at >= '{month}-01' AND occurred_at < ('{month}-01'::date + interval '1 month') "
                "AND visible ORDER BY occurred_at, id) TO STDOUT WITH (FORMAT csv, DELIMITER ';')"
            ) as copy,
        ):
            for _ in copy:
                pass
    finally:
        raw.close()


# -- peer: Unleash (issue 11) -------------------------------------------------------------------

PEER_DIR = tools.ROOT / "instance" / "peers" / "unleash"  # `make bench-peer` installs it there (git-ignored)


def bench_peer(env, redis, seconds: int, rounds: int, users: int, conns: int = 10) -> None:
    """The peer: Unleash's frontend API, GET /api/frontend?userId=<id> (every enabled toggle
    evaluated for that user, the ones that are on returned), beside the floor and our hot read.

    Only when Unleash is installed (``make bench-peer``), else a one-line note and no rows.
    Unleash runs as one Node process (bench/peers/unleash_server.js, as ``unleash-server``
    ships) on a scratch database of the bench's PostgreSQL, with 200 toggles made through its
    admin API, each a gradual rollout (flexibleRollout) at 10% by userId; our server (wsgi:app)
    reads a database with 200 rollout segments at 10% and 10 explicit memberships for each of
    ``users`` users, as bench_read builds it; the floor is bench.baseline_app. The same users
    rotate on all three (a different one on every request), ``conns`` connections, ``rounds``
    interleaved runs of ``seconds`` each. CPU per request: the server's processes and its
    PostgreSQL backends (and Redis, for the gunicorns)."""
    package = PEER_DIR / "node_modules" / "unleash-server" / "package.json"
    node = tools.shutil.which("node")
    if not package.exists() or node is None:
        print(
            f"  peer: Unleash is not installed in {PEER_DIR} (make bench-peer) or node is missing: "
            "skipped, nothing recorded",
            flush=True,
        )
        return
    from concurrent.futures import ThreadPoolExecutor

    version = json.loads(package.read_text())["version"]
    ours_db, peer_db = f"{DB}_peer", f"{DB}_unleash"
    admin_token = f"*:*.{secrets.token_hex(16)}"
    frontend_token = f"default:development.{secrets.token_hex(16)}"
    names = [f"R{i:04d}" for i in range(200)]
    floor = Server("floor", "bench.baseline_app:app", env, Users(1, users), None)
    ours = Server("ours", "wsgi:app", {**env, "DATABASE_URL": db_url(ours_db)}, Users(1, users), ours_db)
    peer, peer_runs = Users(1, users), []
    peer_url = f"http://127.0.0.1:{tools.free_port()}"

    def call(path: str, method: str = "GET", body: dict | None = None, token: str = admin_token) -> bytes:
        request = urllib.request.Request(
            peer_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def make_toggle(name: str) -> None:
        feature = f"/api/admin/projects/default/features/{name}"
        call("/api/admin/projects/default/features", "POST", {"name": name})
        call(
            f"{feature}/environments/development/strategies",
            "POST",
            {
                "name": "flexibleRollout",
                "parameters": {"rollout": "10", "stickiness": "userId", "groupId": name},
            },
        )
        call(f"{feature}/environments/development/on", "POST")

    def peer_run(run_seconds: int, meter=None) -> tools.Load:
        load = tools.wrk(
            peer_url,
            conns,
            run_seconds,
            ROTATING,
            [*peer.args(conns), "/api/frontend?userId=%d", frontend_token],
            meter,
        )
        peer.used += load.requests + tools.wrk_threads(conns)
        return load

    def stop(process: subprocess.Popen) -> None:
        process.terminate()  # Unleash shuts down gracefully on SIGTERM
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    try:
        postmaster = read_workload(env, ours_db, users)
        drop_database(peer_db)
        admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{peer_db}"'))
        admin.dispose()
        peer_db_url = sa.make_url(db_url(peer_db)).set(drivername="postgresql")
        with contextlib.ExitStack() as stack:
            for server in (floor, ours):
                port = tools.free_port()
                server.pid = stack.enter_context(
                    tools.gunicorn(server.target, server.env, port, wait=False)
                ).pid
                server.url = f"http://127.0.0.1:{port}"
            log = stack.enter_context(open(RESULTS / "unleash.log", "w"))
            started = time.perf_counter()
            unleash = subprocess.Popen(
                [
                    node,
                    str(tools.ROOT / "bench" / "peers" / "unleash_server.js"),
                    peer_db_url.render_as_string(hide_password=False),
                    peer_url.rsplit(":", 1)[1],
                ],
                cwd=tools.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "UNLEASH_DIR": str(PEER_DIR),
                    "NODE_ENV": "production",
                    "INIT_ADMIN_API_TOKENS": admin_token,
                    "INIT_FRONTEND_API_TOKENS": frontend_token,
                },
            )
            stack.callback(stop, unleash)
            deadline = time.monotonic() + 300  # its migrations on an empty database come first
            while True:
                try:
                    call("/health")
                    break
                except OSError:
                    if unleash.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"Unleash did not start (exit code {unleash.poll()}); "
                            f"see {RESULTS / 'unleash.log'}"
                        ) from None
                    time.sleep(0.2)
            startup = time.perf_counter() - started
            with ThreadPoolExecutor(8) as pool:
                made, _ = tools.timed(lambda: list(pool.map(make_toggle, names)))
            # Served once its frontend cache has caught up: every toggle on for someone among 300
            # users (a toggle off for all of them at 10%: p = 0.9^300).
            deadline = time.monotonic() + 120
            while True:
                answers = [
                    call(f"/api/frontend?userId={user}", token=frontend_token) for user in range(1, 301)
                ]
                on = [{toggle["name"] for toggle in json.loads(answer)["toggles"]} for answer in answers]
                if set().union(*on) == set(names) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert set().union(*on) == set(names), f"Unleash serves {len(set().union(*on))} of 200 toggles"
            for server in (floor, ours):
                tools.wait_http(f"{server.url}/api/v1/users/1/segments", 60)
            ours_answers = [get(f"{ours.url}/api/v1/users/{user}/segments") for user in range(1, 301)]
            for server in (floor, ours):
                server.users.run(server.url, conns, 1)  # warm-up
            peer_run(1)

            def peer_meter() -> tools.CpuMeter:
                return tools.CpuMeter(
                    {
                        "app": tools.process_tree(unleash.pid),
                        "pg": tools.postgres_backends(postmaster, peer_db),
                    }
                )

            for _ in range(rounds):
                for server in (floor, ours):
                    server.runs.setdefault(conns, []).append(
                        server.users.run(server.url, conns, seconds, server.meter(postmaster, redis))
                    )
                peer_runs.append(peer_run(seconds, peer_meter()))
    finally:
        drop_database(ours_db)
        drop_database(peer_db)

    base, mine, theirs = floor.load(conns), ours.load(conns), tools.combine(peer_runs)
    record(
        "peer",
        f"Unleash {version}: start on an empty database (its migrations)",
        f"{startup:.1f} s",
        "—",
        "—",
    )
    record(
        "peer", "Unleash: 200 toggles, flexibleRollout 10% by userId, admin API", f"{made:.1f} s", "—", "—"
    )
    ours_segments = statistics.mean(len(json.loads(answer)["segments"]) for answer in ours_answers)
    record(
        "peer",
        "answer for users 1-300: items, bytes (mean)",
        f"Unleash {statistics.mean(map(len, on)):.1f} toggles, {statistics.mean(map(len, answers)):,.0f} B",
        f"ours {ours_segments:.1f} segments, {statistics.mean(map(len, ours_answers)):,.0f} B",
        "—",
    )
    record(
        "peer",
        f"floor: constant JSON view, rotating ids, {conns} conn",
        f"{base.rps:,.0f} req/s p99 {base.p99_ms:.1f} ms",
        "—",
        "1.00",
    )
    record("peer", f"  CPU, floor, {conns} conn", _cpu(base), "—", "—")
    errors = f", {theirs.errors} errors" if theirs.errors else ""
    record(
        "peer",
        f"Unleash {version} GET /api/frontend?userId=<rotating>, {conns} conn",
        f"{theirs.rps:,.0f} req/s p99 {theirs.p99_ms:.1f} ms{errors}",
        f"{base.rps:,.0f} req/s floor",
        f"{theirs.rps / base.rps:.2f}",
    )
    record(
        "peer",
        f"  CPU, Unleash (node + its PostgreSQL backends), {conns} conn",
        _cpu(theirs),
        f"{base.cpu_ms_per_request():.2f} ms/req floor",
        f"{theirs.cpu_ms_per_request() / max(base.cpu_ms_per_request(), 1e-9):.1f}x",
    )
    errors = f", {mine.errors} errors" if mine.errors else ""
    record(
        "peer",
        f"ours: GET rotating over {users:,} users, 200 rollout + 10 explicit, {conns} conn",
        f"{mine.rps:,.0f} req/s p99 {mine.p99_ms:.1f} ms{errors} ({mine.rps / base.rps:.2f} x floor)",
        f"{theirs.rps:,.0f} req/s Unleash",
        f"{mine.rps / theirs.rps:.2f}",
    )
    record(
        "peer",
        f"  CPU, ours, {conns} conn",
        _cpu(mine),
        f"{theirs.cpu_ms_per_request():.2f} ms/req Unleash",
        f"{mine.cpu_ms_per_request() / max(theirs.cpu_ms_per_request(), 1e-9):.2f}x",
    )
    if max(load.requests for load in [*peer_runs, *ours.runs[conns]]) > users:
        print(f"  (note: a run made more requests than {users:,} users: some repeated)")


# -- replicas (issue 25) ----------------------------------------------------------------------

# Each of the replica section's two servers (a primary and its streaming replica, started by the
# section itself: the run's own server is not set up for replication).
REPLICA_SETTINGS = {
    "shared_buffers": "512MB",
    "max_connections": "200",
    "shared_preload_libraries": "pg_prewarm",
}
REPLICA_METRICS = re.compile(r"^(segments_replica_\w+)\{([^}]*)\} ([0-9.e+]+)$", re.M)


def _replica_metrics(url: str) -> Counter:
    """The segments_replica_* counters of a gunicorn (its workers summed): (name, labels) -> value."""
    text = get(f"{url}/metrics").decode()
    return Counter({(name, labels): float(value) for name, labels, value in REPLICA_METRICS.findall(text)})


def _position(text: str) -> int:
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


class _Writer:
    """API writes (add or remove one explicit segment of a random user) on one keep-alive
    connection; each returns its Segments-Consistency token."""

    def __init__(self, url: str, users: int, seed: int):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.users, self.rng, self.flip = users, random.Random(seed), False

    def write(self, user: int | None = None) -> tuple[int, str]:
        user = user or self.rng.randint(1, self.users)
        self.flip = not self.flip
        body = {"add": ["Q0000"], "del": []} if self.flip else {"add": [], "del": ["Q0000"]}
        self.conn.request(
            "POST", f"/api/v1/users/{user}/segments", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        return user, response.headers["Segments-Consistency"]

    def read(self, user: int, token: str | None) -> bytes:
        self.conn.request(
            "GET", f"/api/v1/users/{user}/segments", headers={"Segments-Consistency": token} if token else {}
        )
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:200])
        return body


def bench_replicas(env, tmp: Path, seconds: int, rounds: int, users: int, probes: int) -> None:
    """The hot read on a streaming replica against the primary (issue 25), all in one run:

    - replay lag: commit on the primary -> replayed on the replica (its replay position polled),
      idle and under the API write load of 4 clients;
    - the tokened read's cost: the read with its replay check pipelined before it, against the
      same read without, on the replica, in this process (interleaved blocks);
    - the fallback rate of reads sending their write's token at once, with replay lag injected
      (recovery_min_apply_delay) against none;
    - gunicorn's CPU per hot read served by the replica (REPLICA_READS=bounded) against the
      same gunicorn config reading the primary, wrk rounds interleaved.
    """
    from devstack import embedded
    from webapp.services.reads.path import hot_read

    name = f"{DB}_replicas"
    ports = {"primary": tools.free_port(), "replica": tools.free_port()}
    base = tmp / "replicas"
    embedded.start_postgres_on_port(base / "primary", ports["primary"], REPLICA_SETTINGS)
    try:
        url = {role: f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}" for role, port in ports.items()}
        admin = sa.create_engine(url["primary"].rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        subprocess.run(
            [str(tools.BIN / "flask"), "db", "upgrade"],
            cwd=tools.ROOT,
            env={**os.environ, **env, "DATABASE_URL": url["primary"]},
            check=True,
            capture_output=True,
        )
        engine = sa.create_engine(url["primary"])
        make_segments(engine, "R", 200, 1000)
        make_segments(engine, "P", 10, 0)
        make_segments(engine, "Q", 1, 0)  # (the one the write load adds and removes)
        copy_memberships(engine, "P", 1, users)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_probe (id bigint)"))
        started = time.perf_counter()
        embedded.start_replica_on_port(base / "replica", ports["primary"], ports["replica"], REPLICA_SETTINGS)
        record(
            "replicas",
            f"replica: pg_basebackup -R of {users * 10:,} memberships + start",
            f"{time.perf_counter() - started:.1f} s",
            "—",
            "—",
        )
        _bench_replicas_on(env, url, name, seconds, rounds, users, probes, hot_read)
        engine.dispose()
    finally:
        embedded.stop_postgres(base / "replica")
        embedded.stop_postgres(base / "primary")


def _connect(url: str):
    import psycopg

    u = sa.make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True)


def _lag(url: str, ms: int) -> None:
    """Delay the replica's replay of each commit by ``ms`` (0: none), without a restart."""
    import psycopg

    u = sa.make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)


def _replay_lags(url: dict, probes: int) -> list[float]:
    """Seconds from a commit on the primary (returned) to the replica's replay position past its
    token, ``probes`` times, 20 ms apart."""
    from webapp.services.reads.replicas import POSITION, record_end

    lags = []
    with _connect(url["primary"]) as primary, _connect(url["replica"]) as replica:
        for i in range(probes):
            primary.execute("INSERT INTO bench_probe VALUES (%s)", (i,))  # (autocommit: committed on return)
            committed = time.perf_counter()
            token = record_end(_position(primary.execute(POSITION).fetchone()[0]))
            while _position(replica.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]) < token:
                time.sleep(0.0001)
            lags.append(time.perf_counter() - committed)
            time.sleep(0.02)
    return lags


def _pctl(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _bench_replicas_on(
    env, url: dict, name: str, seconds: int, rounds: int, users: int, probes: int, hot_read
) -> None:
    from webapp.services.reads.replicas import POSITION, record_end

    # Replay lag, idle and under 4 API writers (on a gunicorn of the primary).
    idle = _replay_lags(url, probes)
    env = {**env, "RATELIMIT_WRITE": ""}  # (the write load comes from one client: no 300/minute)
    writer_env = {**env, "DATABASE_URL": url["primary"]}
    with tools.gunicorn("wsgi:app", writer_env, port := tools.free_port()) as _:
        stop, written = threading.Event(), []

        def write_load(seed: int) -> None:
            writer, count = _Writer(f"http://127.0.0.1:{port}", users, seed), 0
            while not stop.is_set():
                writer.write()
                count += 1
            written.append(count)

        threads = [threading.Thread(target=write_load, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        load_started = time.perf_counter()
        loaded = _replay_lags(url, probes)
        stop.set()
        for thread in threads:
            thread.join()
        rate = sum(written) / (time.perf_counter() - load_started)
    for label, p in (("p50", 50), ("p99", 99)):
        value, base = _pctl(loaded, p) * 1e3, _pctl(idle, p) * 1e3
        record(
            "replicas",
            f"replay lag {label}: commit -> replayed, {rate:,.0f} API writes/s",
            f"{value:.2f} ms",
            f"{base:.2f} ms idle",
            f"{value / max(base, 1e-9):.2f}",
            "< 5 ms (REPLICA_WAIT_MS)",
            value < 5,
        )

    # The tokened read's cost, in this process: check + read pipelined against the read alone.
    import psycopg  # noqa: F401  (the read engine's driver)

    replica = sa.create_engine(url["replica"], isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    with _connect(url["primary"]) as primary:
        token = record_end(_position(primary.execute(POSITION).fetchone()[0]))
    time.sleep(0.2)  # (replayed by now)
    rng = random.Random(25)
    plain, checked, cpu = [], [], {"plain": 0.0, "checked": 0.0}
    for _ in range(10):
        hot_read(replica, 1)
        hot_read(replica, 1, check=token)
    for block in range(40):
        for kind, out in (("plain", plain), ("checked", checked))[:: 1 if block % 2 else -1]:
            cpu_started = time.process_time()
            for _ in range(100):
                user = rng.randint(1, users)
                started = time.perf_counter()
                hot_read(replica, user, check=token if kind == "checked" else None)
                out.append(time.perf_counter() - started)
            cpu[kind] += time.process_time() - cpu_started
    replica.dispose()
    extra = (statistics.median(checked) - statistics.median(plain)) * 1e6
    record(
        "replicas",
        "tokened read on the replica (check + read, one round trip), p50",
        f"{statistics.median(checked) * 1e6:.0f} µs (+{extra:.0f} µs)",
        f"{statistics.median(plain) * 1e6:.0f} µs read alone",
        f"{statistics.median(checked) / statistics.median(plain):.2f}",
        "+ < 50 µs",
        extra < 50,
    )
    record(
        "replicas",
        "  its CPU in the app process per read",
        f"{cpu['checked'] / len(checked) * 1e6:.0f} µs",
        f"{cpu['plain'] / len(plain) * 1e6:.0f} µs read alone",
        f"{cpu['checked'] / cpu['plain']:.2f}",
    )

    # Two gunicorns, one reading the primary and one the replica (bounded: the token-less hot
    # read is the replica's), measured in interleaved rounds.
    servers = {
        "primary": Server(
            "primary", "wsgi:app", {**env, "DATABASE_URL": url["primary"]}, Users(1, users), name
        ),
        "replica": Server(
            "replica",
            "wsgi:app",
            {
                **env,
                "DATABASE_URL": url["primary"],
                "DATABASE_REPLICA_URLS": url["replica"],
                "REPLICA_READS": "bounded",
            },
            Users(1, users),
            name,
        ),
    }
    postmasters = {}
    for role in ("primary", "replica"):
        with _connect(url[role]) as conn:
            postmasters[role] = tools.psutil.Process(
                conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            ).ppid()
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            port = tools.free_port()
            server.pid = stack.enter_context(tools.gunicorn(server.target, server.env, port, wait=False)).pid
            server.url = f"http://127.0.0.1:{port}"
        for server in servers.values():
            tools.wait_http(f"{server.url}/api/v1/users/1/segments", 60)
            server.users.run(server.url, 10, 1)  # warm-up: every worker's connections and catalog

        def meter(server: Server) -> tools.CpuMeter:
            return tools.CpuMeter(
                {
                    "app": tools.process_tree(server.pid),
                    "pg": tools.postgres_backends(postmasters["primary"], name),
                    "replica": tools.postgres_backends(postmasters["replica"], name),
                }
            )

        before = _replica_metrics(servers["replica"].url)
        for _ in range(rounds):
            for server in servers.values():
                server.runs.setdefault(10, []).append(
                    server.users.run(server.url, 10, seconds, meter(server))
                )
        after = _replica_metrics(servers["replica"].url)
        served = {
            labels: after[(metric, labels)] - before[(metric, labels)]
            for metric, labels in after
            if metric == "segments_replica_reads_total"
        }

        # Fallbacks: a write, then at once the read sending its token (REPLICA_WAIT_MS 5), with
        # replay lag injected and without.
        client = _Writer(servers["replica"].url, users, 7)
        fallbacks = {}
        for lag_ms in (0, 20, 1000):
            _lag(url["replica"], lag_ms)
            start = _replica_metrics(servers["replica"].url)
            wrong = 0
            for _ in range(probes):
                user, token = client.write()
                added = client.flip
                wrong += (b'"Q0000"' in client.read(user, token)) != added
            end = _replica_metrics(servers["replica"].url)
            delta = Counter({key: end[key] - start[key] for key in end})
            fell = sum(v for (metric, _), v in delta.items() if metric == "segments_replica_fallbacks_total")
            fallbacks[lag_ms] = (fell, wrong)
        _lag(url["replica"], 0)

    primary, on_replica = servers["primary"].load(10), servers["replica"].load(10)
    replica_share = sum(v for labels, v in served.items() if 'served_by="replica"' in labels) / max(
        sum(served.values()), 1
    )
    record(
        "replicas",
        "hot read (GET, rotating ids) served by the replica, 10 conn",
        f"{on_replica.rps:,.0f} req/s p99 {on_replica.p99_ms:.1f} ms, {replica_share:.0%} on the replica"
        + (f", {on_replica.errors} errors" if on_replica.errors else ""),
        f"{primary.rps:,.0f} req/s p99 {primary.p99_ms:.1f} ms",
        f"{on_replica.rps / primary.rps:.2f}",
    )
    ratio = on_replica.cpu_ms_per_request("app") / max(primary.cpu_ms_per_request("app"), 1e-9)
    record(
        "replicas",
        "  gunicorn CPU per request: replica vs primary (interleaved rounds)",
        f"{on_replica.cpu_ms_per_request('app'):.3f} ms/req",
        f"{primary.cpu_ms_per_request('app'):.3f} ms/req",
        f"{ratio:.3f}",
        "<= 1.10",
        ratio <= 1.10 and on_replica.errors == 0 and replica_share > 0.95,
    )
    record("replicas", "  CPU, replica", _cpu(on_replica), "—", "—")
    record("replicas", "  CPU, primary", _cpu(primary), "—", "—")
    base_fell, _ = fallbacks[0]
    for lag_ms, (fell, wrong) in fallbacks.items():
        record(
            "replicas",
            f"read right after its write, token sent: fallbacks, {lag_ms} ms lag injected",
            f"{fell:.0f} of {probes} ({fell / probes:.0%}), {wrong} wrong",
            f"{base_fell:.0f} of {probes} with none",
            f"{fell / max(base_fell, 1):.1f}",
            "0 wrong" + (", < 10% fallbacks" if lag_ms == 0 else ""),
            wrong == 0 and (lag_ms != 0 or fell / probes < 0.10),
        )


# -- main -------------------------------------------------------------------------------------


# -- webhooks ---------------------------------------------------------------------------------


class _Receiver:
    """A webhook receiver on 127.0.0.1: answers 200 at once (``hang=False``) or never, until
    closed (a receiver that hangs). Notes when each webhook-id arrived."""

    def __init__(self, hang: bool):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.arrived: dict[str, float] = {}  # the changed description (the write's marker) -> when
        self.closing = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                if hang:
                    owner.closing.wait(120)
                    return
                owner.arrived.setdefault(str(body["data"].get("after")), time.perf_counter())
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def bench_webhooks(env, writes: int) -> None:
    """Issue 27: writes (a segment's description changed, one client after another) with a
    webhook subscription whose receiver answers at once, then again with a second subscription
    whose receiver hangs (each attempt waits the 10 s timeout, retried with backoff): the writes'
    p99 must not move (the event is one INSERT in the write's transaction; delivery is the
    worker's), nor the healthy subscription's delivery latency, from the write's answer to the
    receiver's arrival. Receivers on 127.0.0.1 (WEBHOOK_ALLOW_LOOPBACK for this run only)."""
    port = tools.free_port()
    hook_env = {**env, "WEBHOOK_ALLOW_LOOPBACK": "1", "RATELIMIT_WRITE": ""}  # (300/minute otherwise)
    healthy, hanging = _Receiver(hang=False), _Receiver(hang=True)
    try:
        with tools.gunicorn("wsgi:app", hook_env, port), tools.rq_worker(hook_env):
            base = f"http://127.0.0.1:{port}"
            _call(base + "/api/v1/segments", "POST", {"slug": "HOOKED"})
            types = ["segment.changed"]
            _call(base + "/api/v1/webhooks", "POST", {"url": healthy.url, "event_types": types})

            def run(label: str) -> tuple[list[float], list[float]]:
                times, answered = [], {}
                for n in range(writes):
                    marker = f"{label} {n}"
                    started = time.perf_counter()
                    answer = _call(base + "/api/v1/segments/HOOKED", "PATCH", {"description": marker})
                    assert "http_status" not in answer, answer
                    answered[marker] = time.perf_counter()
                    times.append(answered[marker] - started)
                    time.sleep(0.01)
                deadline = time.perf_counter() + 60
                while any(m not in healthy.arrived for m in answered) and time.perf_counter() < deadline:
                    time.sleep(0.05)
                lags = [
                    max(0.0, healthy.arrived[m] - at) for m, at in answered.items() if m in healthy.arrived
                ]
                return times, lags

            run("warm-up")
            alone, alone_lag = run("alone")
            _call(base + "/api/v1/webhooks", "POST", {"url": hanging.url, "event_types": types})
            beside, beside_lag = run("beside a hanging receiver")
    finally:
        healthy.close()
        hanging.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")

    record(
        "webhooks",
        f"writes' p99 with a hanging receiver subscribed ({writes} writes)",
        f"{pct(beside, 0.99):.1f} ms",
        f"{pct(alone, 0.99):.1f} ms, none hanging",
        f"{pct(beside, 0.99) / pct(alone, 0.99):.1f}x",
        "< 2x",
        pct(beside, 0.99) < 2 * pct(alone, 0.99),
    )
    record(
        "webhooks",
        "delivery p50 / p99, write answered -> receiver, beside a hanging one",
        f"{pct(beside_lag, 0.5):.0f} / {pct(beside_lag, 0.99):.0f} ms",
        f"{pct(alone_lag, 0.5):.0f} / {pct(alone_lag, 0.99):.0f} ms alone",
        "—",
        "p99 < 1 s",
        pct(beside_lag, 0.99) < 1000 and len(beside_lag) == writes,
    )


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        / 1024
        / 1024
    )
    admin = sa.create_engine(ADMIN)
    with admin.connect() as conn:
        pg = conn.scalar(sa.text("SHOW server_version")).split()[0]
        buffers = conn.scalar(sa.text("SHOW shared_buffers"))
    admin.dispose()
    workers = os.environ.get("GUNICORN_WORKERS") or f"{(os.cpu_count() or 1) * 2 + 1}"
    wrk = subprocess.run([tools.ensure_wrk(), "--version"], capture_output=True, text=True).stdout.split()[1]
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"PostgreSQL {pg} (shared_buffers {buffers}), gunicorn {workers} sync workers, wrk {wrk}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes and shorter runs (a smoke run; 1M memberships instead of 10M)",
    )
    parser.add_argument(
        "--only",
        default="bulk,read,ofrep,replicas,scaling,dashboard,expiry,report,webhooks,traits,rules",
        help="comma-separated sections (also: trait_updates, the rules section's trait update rows alone)",
    )
    parser.add_argument(
        "--tradeoff",
        type=lambda text: [_pacing(setting) for setting in text.split(",")],
        default=[],
        help="the others section's chunked operations and purge again for each "
        "BULK_CHUNK:BULK_PAUSE_MS[:BULK_PAUSE_RATIO] setting (e.g. 1000:0,5000:20,5000:0:1), after "
        "the bulk section if it runs (--only '' for these alone)",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    size = 50_000 if args.quick else 1_000_000
    seconds = 2 if args.quick else 5  # per measurement (scaling)
    read_seconds, rounds = (1, 4) if args.quick else (2, 6)  # read: per run, runs per server and concurrency
    # read: users with 10 explicit memberships each; the large database 10M rows (quick: 1M)
    small_users, large_users = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tools.ensure_wrk()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        # (undone in reverse: the databases, then Redis, then the server, then the directory)
        cleanup.callback(stop_embedded_server, Path(tmp))
        choose_server(Path(tmp))
        redis = PrivateRedis(Path(tmp))
        redis.start()
        cleanup.callback(redis.stop)
        cleanup.callback(
            lambda: [
                drop_database(name)
                for name in (DB, f"{DB}_large", f"{DB}_template", f"{DB}_rules_a", f"{DB}_rules_b")
            ]
        )
        # Production settings (rate limiter on, hot path without a limit), a real secret key.
        env = {
            "DATABASE_URL": db_url(),
            "REDIS_URL": redis.url,
            "REPORTS_DIR": str(Path(tmp) / "reports"),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "TRUSTED_HOSTS": "127.0.0.1,localhost",  # what wrk and the bench's clients send
            "MAX_CONTENT_LENGTH": str(64 * 1024 * 1024),
            "RATELIMIT_HOT_PATH": "",
        }
        about = machine()
        speed = tools.machine_speed()
        print(
            f"machine: {about}\nspeed: a fixed pure-Python loop takes {speed:.3f} s (lower is faster)\n"
            f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if args.quick else ''}\n",
            flush=True,
        )
        drop_database(f"{DB}_template")  # left by an interrupted run: migrated anew
        if "bulk" in sections:
            engine = fresh_database(env)
            timed_section("bulk", lambda: bench_bulk(engine, env, size))
            timed_section("add profile", lambda: bench_bulk_profile(env, size))
            timed_section("set-based", lambda: bench_set_based(env, 200 if args.quick else 2_000))
            timed_section("others", lambda: bench_others(engine, env, size))
            timed_section("parse", lambda: bench_parse(size))
            engine.dispose()
        if "others" in sections and "bulk" not in sections:  # (the bulk section runs it too)
            engine = fresh_database(env)
            timed_section("others", lambda: bench_others_alone(engine, env, size))
            engine.dispose()
        for chunk, pause, ratio in args.tradeoff:  # the chunked operations again, other settings
            timed_section(
                f"others, BULK_CHUNK={chunk} BULK_PAUSE_MS={pause} BULK_PAUSE_RATIO={ratio:g}",
                lambda c=chunk, p=pause, r=ratio: bench_others(
                    fresh_database(env),
                    env,
                    size,
                    {"BULK_CHUNK": str(c), "BULK_PAUSE_MS": str(p), "BULK_PAUSE_RATIO": f"{r:g}"},
                    f" [chunk {c:,}, pause {p} ms, ratio {r:g}]",
                    chunked_only=True,
                ),
            )
        if "read" in sections:
            timed_section(
                "read", lambda: bench_read(env, redis, read_seconds, rounds, small_users, large_users)
            )
        if "ofrep" in sections:
            timed_section("ofrep", lambda: bench_ofrep(env, redis, read_seconds, 2 * rounds, small_users))
        if "replicas" in sections:
            timed_section(
                "replicas",
                lambda: bench_replicas(
                    env, Path(tmp), read_seconds, rounds, small_users, 100 if args.quick else 300
                ),
            )
        if "peer" in sections or args.only == parser.get_default("only"):  # a note only, if not installed
            timed_section("peer", lambda: bench_peer(env, redis, read_seconds, rounds, small_users))
        engine = fresh_database(env)
        if "scaling" in sections:
            timed_section("scaling", lambda: bench_scaling(engine, env, seconds))
        if "dashboard" in sections:
            timed_section("dashboard", lambda: bench_dashboard(engine, env, 1_000 if args.quick else 10_000))
        if "expiry" in sections:
            timed_section("expiry", lambda: bench_expiry(engine, env, size))
        if "report" in sections:
            timed_section("report", lambda: bench_report(engine, env, [size // 10, size]))
        if "webhooks" in sections:
            timed_section("webhooks", lambda: bench_webhooks(env, 100 if args.quick else 300))
        if "traits" in sections:
            timed_section("traits", lambda: bench_traits(engine, env, size, Path(tmp)))
        engine.dispose()
        if "rules" in sections:
            timed_section("rules", lambda: bench_rules(env, size, small_users, read_seconds, rounds))
        if "trait_updates" in sections:
            timed_section("trait updates", lambda: bench_trait_updates(env, size, small_users))
        record(
            "machine",
            "fixed pure-Python loop, best of 5: at the end",
            f"{tools.machine_speed():.3f} s",
            f"{speed:.3f} s at the start",
            "—",
        )
    write_results(about + (" (--quick)" if args.quick else ""))
    print(f"total {time.perf_counter() - started:.0f} s")


def timed_section(name: str, run) -> None:
    seconds, _ = tools.timed(run)
    print(f"  ({name}: {seconds:.0f} s)", flush=True)


def write_results(about: str) -> None:
    header = "| section | case | measured | baseline (same run) | ratio | target | |\n|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r.section} | {r.case} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {r.verdict} |\n"
        for r in ROWS
    )
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    (RESULTS / "latest.md").write_text(f"Run {stamp} on {about}\n\n{header}{body}")
    (RESULTS / "latest.json").write_text(
        json.dumps({"when": stamp, "machine": about, "rows": [asdict(r) for r in ROWS]}, indent=1)
    )
    print(f"\n{header}{body}\nwritten to {RESULTS / 'latest.md'}")
    misses = [r for r in ROWS if r.verdict == "MISS"]
    print(f"{len(ROWS)} measurements, {len(misses)} target(s) missed")


if __name__ == "__main__":
    sys.exit(main())
