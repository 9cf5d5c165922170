"""`make bench`: start what is needed on 127.0.0.1, measure, stop everything, print a table.

Sections: bulk (1M ids, API and dashboard upload), read (hot path under gunicorn with wrk),
scaling (rollout segments 10/100/1000; user-id independence), dashboard (segments page with 10k
segments), expiry (1M), report (100k, 1M).
Each figure is printed next to a baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench import tools
from tests.redis_server import PrivateRedis

DB = "segments_bench"
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"
RESULTS = tools.ROOT / "bench" / "results"


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
    print(f"  {section:8} {case:52} {value:>22}  vs {baseline:>22}  {ratio:>10}  {target} {verdict}", flush=True)


# -- database ---------------------------------------------------------------------------------

def fresh_database(env: dict) -> sa.Engine:
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    subprocess.run([str(tools.BIN / "flask"), "db", "upgrade"], cwd=tools.ROOT, env={**os.environ, **env},
                   check=True, capture_output=True)
    return sa.create_engine(URL)


def drop_database() -> None:
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
    admin.dispose()


def make_segments(engine, prefix: str, count: int, basis_points: int) -> None:
    """Segments created set-based, each rollout recorded like the service does."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
            "SELECT :p || lpad(g::text, 4, '0'), 'bench', :bp, md5(random()::text || g), now() "
            "FROM generate_series(0, :n - 1) g"), {"p": prefix, "bp": basis_points, "n": count})
        if basis_points:
            conn.execute(sa.text(
                "INSERT INTO rollout_changes (segment_id, from_bp, to_bp, reason, changed_at) "
                "SELECT id, 0, rollout_basis_points, 'rollout', created_at FROM segments WHERE slug LIKE :p || '%'"),
                {"p": prefix})


def explicit(engine, user_id: int, prefix: str, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at) SELECT :u, id, now() FROM segments "
            "WHERE slug LIKE :p || '%' ORDER BY slug LIMIT :n"), {"u": user_id, "p": prefix, "n": count})


def post(url: str, data: bytes, headers: dict, opener=None) -> dict:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with (opener or urllib.request.build_opener()).open(request, timeout=300) as response:
        body = response.read()
    return json.loads(body) if headers.get("Accept") != "text/html" else {"html": body.decode()}


# -- sections ---------------------------------------------------------------------------------

def bench_bulk(engine, env, size: int) -> None:
    ids = list(range(10_000_000, 10_000_000 + size))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE UNLOGGED TABLE scratch_ids (user_id bigint PRIMARY KEY)"))
    base_s, _ = tools.timed(lambda: _scratch_insert(engine, ids))
    port = tools.free_port()
    with tools.gunicorn("wsgi:app", env, port) as server:
        base = f"http://127.0.0.1:{port}"
        post(base + "/api/v1/segments", json.dumps({"slug": "BULK_API"}).encode(), {"Content-Type": "application/json"})
        post(base + "/api/v1/segments", json.dumps({"slug": "BULK_DASH"}).encode(), {"Content-Type": "application/json"})
        workers = tools.worker_pids(server.pid)
        tools.reset_peak_rss(workers)
        body = json.dumps({"user_ids": ids}).encode()
        api_s, result = tools.timed(lambda: post(base + "/api/v1/segments/BULK_API/members", body,
                                                 {"Content-Type": "application/json"}))
        api_rss = tools.peak_rss_mb(workers)
        assert result["added"] == size, result
        record("bulk", f"API: {size:,} ids, one request", f"{api_s:.2f} s, {api_rss:.0f} MB peak",
               f"{base_s:.2f} s raw INSERT", f"{api_s / base_s:.1f}x", "< 30 s, < 300 MB",
               api_s < 30 and api_rss < 300)
        # The dashboard upload: session cookie + CSRF token + multipart file, like the browser.
        jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = jar.open(base + "/segments/BULK_DASH").read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        boundary = secrets.token_hex(8)
        upload = "\n".join(str(i) for i in ids).encode()
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ids.csv\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + upload + f"\r\n--{boundary}--\r\n".encode()
        tools.reset_peak_rss(workers)
        dash_s, html = tools.timed(lambda: post(base + "/segments/BULK_DASH/members", form, {
            "Content-Type": f"multipart/form-data; boundary={boundary}", "HX-Request": "true",
            "Accept": "text/html"}, jar))
        dash_rss = tools.peak_rss_mb(workers)
        assert f"{size:,} added" in html["html"], html["html"][:500]
        record("bulk", f"dashboard upload: {len(upload) / 1e6:.1f} MB file, {size:,} ids",
               f"{dash_s:.2f} s, {dash_rss:.0f} MB peak", f"{base_s:.2f} s raw INSERT",
               f"{dash_s / base_s:.1f}x", "< 30 s, < 300 MB", dash_s < 30 and dash_rss < 300)


def _scratch_insert(engine, ids):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO scratch_ids SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": ids})


def bench_set_based(env) -> None:
    """What the set-based write bought: 2,000 adds as one statement vs one call per user."""
    code = """
import time
from webapp import create_app
from webapp.extensions import db
from webapp.services import memberships, segments
app = create_app()
with app.app_context():
    segments.create_segment(db.session, "PER_ROW"); segments.create_segment(db.session, "SET_BASED"); db.session.commit()
    ids = list(range(50_000_000, 50_002_000))
    t = time.perf_counter()
    for uid in ids:
        memberships.change_user_segments(db.session, uid, [memberships.AddSpec("PER_ROW")], reason="api")
        db.session.commit()
    per_row = time.perf_counter() - t
    t = time.perf_counter()
    memberships.bulk_add(db.session, "SET_BASED", ids); db.session.commit()
    print(per_row, time.perf_counter() - t)
"""
    _, _, out = tools.run_child(code, env)
    per_row, set_based = map(float, out.split())
    record("bulk", "2,000 adds: one set-based statement", f"{set_based * 1000:.0f} ms",
           f"{per_row * 1000:.0f} ms per-user calls", f"{per_row / set_based:.0f}x faster")


def bench_read(engine, env, seconds: int) -> None:
    make_segments(engine, "R", 200, 1000)  # 200 rollout segments at 10%
    make_segments(engine, "P", 100, 0)
    explicit(engine, 2, "P", 10)
    explicit(engine, 3, "P", 100)
    users = {1: 0, 2: 10, 3: 100}
    modes = {
        "baseline": ("bench.baseline_app:app", {}),
        "cached": ("wsgi:app", {"CACHE_ENABLED": "true"}),
        "uncached": ("wsgi:app", {"CACHE_ENABLED": "false"}),
    }
    results: dict = {}
    for mode, (target, extra) in modes.items():
        port = tools.free_port()
        with tools.gunicorn(target, {**env, **extra}, port):
            for conc in (1, 10, 50):
                for user in (users if mode != "baseline" else [1]):
                    url = f"http://127.0.0.1:{port}/api/v1/users/{user}/segments"
                    tools.wrk(url, conc, 1)  # warm-up (connections, cache entry)
                    results[mode, conc, user] = tools.wrk(url, conc, seconds)
    for conc in (1, 10, 50):
        base = results["baseline", conc, 1]
        record("read", f"baseline: constant JSON view, {conc} conn", f"{base.rps:,.0f} req/s",
               "—", "1.00", f"p99 {base.p99_ms:.1f} ms")
        for user, count in users.items():
            for mode, floor in (("cached", 0.8), ("uncached", 0.5)):
                load = results[mode, conc, user]
                ratio = load.rps / base.rps
                ok = ratio >= floor and (conc != 10 or load.p99_ms < 10) and load.errors == 0
                record("read", f"{mode}, {count} explicit + 200 rollout, {conc} conn",
                       f"{load.rps:,.0f} req/s p99 {load.p99_ms:.1f} ms", f"{base.rps:,.0f} req/s",
                       f"{ratio:.2f}", f">= {floor:.0%}" + (", p99 < 10 ms" if conc == 10 else ""), ok)
    # Limiter overhead: the cached path with and without Flask-Limiter on Redis.
    limited = _user_two_at_ten({**env, "RATELIMIT_ENABLED": "true", "RATELIMIT_READ": "100000000/minute"}, seconds)
    plain = results["cached", 10, 2]
    record("read", "cached + rate limiter (Redis), 10 conn", f"{limited.rps:,.0f} req/s p99 {limited.p99_ms:.1f} ms",
           f"{plain.rps:,.0f} req/s no limiter", f"{limited.rps / plain.rps:.2f}")
    # What the pool pre-ping (on by default) costs on the uncached path.
    unpinged = _user_two_at_ten({**env, "CACHE_ENABLED": "false", "DB_POOL_PRE_PING": "false"}, seconds)
    pinged = results["uncached", 10, 2]
    record("read", "uncached with pool pre-ping, 10 conn", f"{pinged.rps:,.0f} req/s",
           f"{unpinged.rps:,.0f} req/s without", f"{pinged.rps / unpinged.rps:.2f}")


def _user_two_at_ten(env: dict, seconds: int) -> tools.Load:
    """The app under this config, user 2's segments at 10 connections."""
    port = tools.free_port()
    with tools.gunicorn("wsgi:app", env, port):
        url = f"http://127.0.0.1:{port}/api/v1/users/2/segments"
        tools.wrk(url, 10, 1)
        return tools.wrk(url, 10, seconds)


def bench_scaling(engine, env, seconds: int) -> None:
    make_segments(engine, "S", 1000, 0)
    port = tools.free_port()
    base_port = tools.free_port()
    with tools.gunicorn("bench.baseline_app:app", env, base_port):
        tools.wrk(f"http://127.0.0.1:{base_port}/api/v1/users/1/segments", 1, 1)
        base = tools.wrk(f"http://127.0.0.1:{base_port}/api/v1/users/1/segments", 1, seconds)
    with tools.gunicorn("wsgi:app", {**env, "CACHE_ENABLED": "false"}, port):
        for count in (10, 100, 1000):
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE segments SET rollout_basis_points = 0 WHERE rollout_basis_points > 0"))
                conn.execute(sa.text(
                    "UPDATE segments SET rollout_basis_points = 1000 WHERE slug LIKE 'S%' AND slug <= :last"),
                    {"last": f"S{count - 1:04d}"})
            url = f"http://127.0.0.1:{port}/api/v1/users/1/segments"
            tools.wrk(url, 1, 1)
            load = tools.wrk(url, 1, seconds)
            record("scaling", f"GET uncached, {count} rollout segments, 1 conn",
                   f"p50 {load.p50_ms:.2f} ms p99 {load.p99_ms:.2f} ms", f"p50 {base.p50_ms:.2f} ms baseline",
                   f"{load.p50_ms / base.p50_ms:.1f}x")
    # Rollout evaluation does not depend on how many users exist or how large the id is.
    code = """
import time
from webapp.services import rollout
salts = [f"salt{i}" for i in range(200)]
for uid in (1, 10**6, 10**12, 10**18):
    t = time.perf_counter()
    for _ in range(200):
        [rollout.in_rollout(s, uid, 1000) for s in salts]
    print(uid, (time.perf_counter() - t) / 200 * 1e6)
"""
    _, _, out = tools.run_child(code, env)
    timings = [line.split() for line in out.strip().splitlines()]
    first = float(timings[0][1])
    for uid, micros in timings:
        record("scaling", f"evaluate 200 rollouts for user id {int(uid):.0e}", f"{float(micros):.0f} µs",
               f"{first:.0f} µs (id 1)", f"{float(micros) / first:.2f}")
    with engine.begin() as conn:
        before = conn.scalar(sa.text("SELECT (SELECT count(*) FROM memberships) + (SELECT count(*) FROM rollout_changes)"))
        conn.execute(sa.text("INSERT INTO rollout_changes (segment_id, from_bp, to_bp, reason, changed_at) "
                             "SELECT id, 1000, 2000, 'rollout', now() FROM segments WHERE rollout_basis_points = 1000"))
        conn.execute(sa.text("UPDATE segments SET rollout_basis_points = 2000 WHERE rollout_basis_points = 1000"))
        after = conn.scalar(sa.text("SELECT (SELECT count(*) FROM memberships) + (SELECT count(*) FROM rollout_changes)"))
    record("scaling", "rows written raising 1000 rollouts 10%→20%", f"{after - before:,} rows",
           "1 per segment", "—", "no per-user rows", after - before == 1000)


def bench_dashboard(engine, env, count: int) -> None:
    """The segments page with many segments: first page, a deep page, a search (p50 of 30)."""
    make_segments(engine, "DASH_", count, 0)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    port = tools.free_port()
    with tools.gunicorn("wsgi:app", env, port):
        base = f"http://127.0.0.1:{port}"
        last = max(1, count // 25)
        cases = {"first page": "/", f"page {last} (last)": f"/?page={last}",
                 "search 'DASH_09'": "/?q=DASH_09", "JSON list, page 1": "/api/v1/segments"}
        timings = {}
        for name, path in cases.items():
            samples = []
            for _ in range(30):
                seconds, _ = tools.timed(lambda p=path: urllib.request.urlopen(base + p, timeout=30).read())
                samples.append(seconds * 1000)
            timings[name] = sorted(samples)[len(samples) // 2]
        health = sorted(tools.timed(lambda: urllib.request.urlopen(base + "/healthz").read())[0] * 1000
                        for _ in range(30))[15]
    for name, p50 in timings.items():
        record("dashboard", f"{count:,} segments: {name}", f"p50 {p50:.1f} ms", f"p50 {health:.1f} ms /healthz",
               f"{p50 / health:.1f}x", "< 100 ms", p50 < 100)


def bench_expiry(engine, env, size: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
                             "VALUES ('TTL_BENCH', '', 0, 'x', now())"))
        conn.execute(sa.text(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT 20000000 + g, (SELECT id FROM segments WHERE slug = 'TTL_BENCH'), now() - interval '30 days', "
            "now() - (g || ' seconds')::interval FROM generate_series(1, :n) g"), {"n": size})
        conn.execute(sa.text("CREATE UNLOGGED TABLE scratch_expired AS SELECT * FROM memberships WHERE expires_at < now()"))
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    base_s, _ = tools.timed(lambda: _delete_scratch(engine))
    seconds, rss, out = tools.run_child(
        "from webapp import create_app\nfrom webapp.extensions import db\n"
        "from webapp.services.memberships import expire_memberships\nimport time\n"
        "app = create_app()\nwith app.app_context():\n    t = time.perf_counter()\n"
        "    n = expire_memberships(db.session, commit_each_batch=True)\n    db.session.commit()\n"
        "    print(n, time.perf_counter() - t)", env)
    removed, inner = out.split()
    with engine.connect() as conn:
        events = conn.scalar(sa.text("SELECT count(*) FROM membership_events WHERE reason = 'ttl'"))
    assert int(removed) == size == events, (removed, events)
    record("expiry", f"purge {size:,} expired (+ {events:,} history rows)", f"{float(inner):.2f} s, {rss:.0f} MB",
           f"{base_s:.2f} s plain DELETE", f"{float(inner) / base_s:.1f}x", "< 30 s", float(inner) < 30)


def _delete_scratch(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM scratch_expired"))


def bench_report(engine, env, sizes: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
                             "VALUES ('REPORT_BENCH', '', 0, 'x', now())"))
    for month, size in zip(("2031-01", "2031-02"), sizes, strict=True):
        start = datetime.fromisoformat(month + "-01T00:00:00+00:00")
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
                "SELECT 30000000 + g % 500000, (SELECT id FROM segments WHERE slug = 'REPORT_BENCH'), 'REPORT_BENCH', "
                "CASE WHEN g % 2 = 0 THEN 'added' ELSE 'removed' END, 'api', "
                ":start + (g * interval '2 seconds'), 'bench' FROM generate_series(1, :n) g"),
                {"start": start, "n": size})
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE membership_events"))
        base_s, _ = tools.timed(lambda m=month: _copy_out(engine, m))
        seconds, rss, out = tools.run_child(
            "from webapp import create_app\nfrom webapp.extensions import db\nfrom webapp.services import reports\n"
            "from webapp.jobs.tasks import generate_report\nimport time\napp = create_app()\n"
            "with app.app_context():\n"
            f"    r = reports.request_report(db.session, period='{month}', enqueue=lambda _id: None)\n"
            "    db.session.commit()\n    t = time.perf_counter()\n"
            "    n = generate_report(str(r.id))\n    print(n, time.perf_counter() - t)", env)
        rows, inner = out.split()
        assert int(rows) == size, (rows, size)
        record("report", f"CSV of {size:,} history rows (all users, one month)",
               f"{float(inner):.2f} s, {rss:.0f} MB peak", f"{base_s:.2f} s COPY TO STDOUT",
               f"{float(inner) / base_s:.1f}x", "< 30 s, < 150 MB", float(inner) < 30 and rss < 150)


def _copy_out(engine, month: str) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur, cur.copy(
                "COPY (SELECT user_id, segment_slug, action, occurred_at FROM membership_events "
                f"WHERE occurred_at >= '{month}-01' AND occurred_at < ('{month}-01'::date + interval '1 month') "
                "ORDER BY occurred_at, id) TO STDOUT WITH (FORMAT csv, DELIMITER ';')") as copy:
            for _ in copy:
                pass
    finally:
        raw.close()


# -- main -------------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 1024 / 1024
    pg = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
                        capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, PostgreSQL {pg}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (a smoke run)")
    parser.add_argument("--only", default="bulk,read,scaling,dashboard,expiry,report",
                        help="comma-separated sections")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    size = 50_000 if args.quick else 1_000_000
    seconds = 2 if args.quick else 5
    RESULTS.mkdir(parents=True, exist_ok=True)
    tools.ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp))
        redis.start()
        env = {"DATABASE_URL": URL, "REDIS_URL": redis.url, "REPORTS_DIR": str(Path(tmp) / "reports"),
               "RATELIMIT_ENABLED": "false", "SECRET_KEY": "bench", "MAX_CONTENT_LENGTH": str(64 * 1024 * 1024)}
        print(f"machine: {machine()}\nstarted {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n", flush=True)
        try:
            engine = fresh_database(env)
            if "bulk" in sections:
                bench_bulk(engine, env, size)
                bench_set_based({**env, "REDIS_URL": ""})
            if "read" in sections:
                bench_read(engine, env, seconds)
            if "scaling" in sections:
                bench_scaling(engine, env, seconds)
            if "dashboard" in sections:
                bench_dashboard(engine, env, 1_000 if args.quick else 10_000)
            child_env = {**env, "REDIS_URL": ""}
            if "expiry" in sections:
                bench_expiry(engine, child_env, size)
            if "report" in sections:
                bench_report(engine, child_env, [size // 10, size])
            engine.dispose()
        finally:
            redis.stop()
            drop_database()
    write_results(machine())


def write_results(about: str) -> None:
    header = "| section | case | measured | baseline (same run) | ratio | target | |\n|---|---|---|---|---|---|---|\n"
    body = "".join(f"| {r.section} | {r.case} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {r.verdict} |\n"
                   for r in ROWS)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    (RESULTS / "latest.md").write_text(f"Run {stamp} on {about}\n\n{header}{body}")
    (RESULTS / "latest.json").write_text(json.dumps({"when": stamp, "machine": about,
                                                     "rows": [asdict(r) for r in ROWS]}, indent=1))
    print(f"\n{header}{body}\nwritten to {RESULTS / 'latest.md'}")
    misses = [r for r in ROWS if r.verdict == "MISS"]
    print(f"{len(ROWS)} measurements, {len(misses)} target(s) missed")


if __name__ == "__main__":
    sys.exit(main())
