"""Scaling figures for docs/scaling.md: partitioned history at tens of millions of rows, the
hot read statement at 10M memberships.

    .venv/bin/python -m bench.scaling                       # history 10M then 30M, memberships 10M
    .venv/bin/python -m bench.scaling --history 10M --memberships 1M   # smaller
    .venv/bin/python -m bench.scaling --history 10M,30M,100M          # the full size (disk: ~20 GB)

Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379 (only for the app's
start-up during ``flask db upgrade``). Creates the database ``scale_<pid>``, migrates it with
``flask db upgrade``, measures, drops it (``--keep`` keeps it). Results are printed and written
to bench/results/scaling-<time>.json.

History: ``--history`` sizes are reached one after the other in the same table (rows added in
chunks of ``INSERT ... SELECT generate_series``), spread evenly over the monthly partitions
present (25 months: 2024-01 .. 2026-01). At each size: one month's report (the count, then the
month's rows streamed through a psycopg server-side cursor, with the statements of
webapp.services.history.reports), the table's size on disk, and retention of the oldest month:
``DROP TABLE`` of its partition against ``DELETE`` (+ the ``VACUUM`` that frees the space) of the
same rows in a copy of that partition (same indexes). The dropped month is gone for the next
size, whose rows go to the remaining months.

Memberships (measured first): ``--memberships`` rows (five segments per user), then the read path's USER_ROWS
statement (webapp.services.reads.path) for random users, ``--reads`` times on one autocommit
connection (prepared after five runs, as the app's connections do): p50, p99, max.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from webapp.services.reads.path import USER_ROWS

ROOT = Path(__file__).resolve().parent.parent
SERVER = "host=127.0.0.1 port=5432 user=postgres"
FIRST_MONTH = (2024, 1)
MONTHS = 25
REPORT_MONTH = (2025, 6)
CHUNK = 2_000_000
SEGMENTS = 100
# The statements of reports._count_all and reports._all_history (stored events part).
COUNT = "SELECT count(*) FROM membership_events WHERE occurred_at >= %(lo)s AND occurred_at < %(hi)s"
ROWS = (
    "SELECT user_id, segment_slug, action, occurred_at FROM membership_events "
    "WHERE occurred_at >= %(lo)s AND occurred_at < %(hi)s ORDER BY occurred_at, id"
)
RESULTS: dict = {}
# occurred_at within a month: rising with the insert order (as the app appends history), or
# scattered over the month (rows physically out of time order: the worst case for a month read).
TIME_EXPR = {"time": "((g - %(first)s) * %(span)s / %(per_month)s)", "shuffled": "((g * 7919) %% %(span)s)"}
ORDER = "time"
OUT = ROOT / "bench" / "results" / f"scaling-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"


def size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * scale)


def month_bounds(month: tuple[int, int]) -> tuple[datetime, datetime]:
    year, mon = month
    nxt = (year + mon // 12, mon % 12 + 1)
    return datetime(year, mon, 1, tzinfo=UTC), datetime(*nxt, 1, tzinfo=UTC)


def months_from(first: tuple[int, int], count: int) -> list[tuple[int, int]]:
    index = first[0] * 12 + first[1] - 1
    return [((index + n) // 12, (index + n) % 12 + 1) for n in range(count)]


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def say(line: str) -> None:
    print(line, flush=True)


def record(key: str, value) -> None:
    RESULTS[key] = value
    say(f"  {key:58} {value}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(RESULTS, indent=2, default=str))  # as it goes: a stopped run keeps its figures


# -- set-up --------------------------------------------------------------------------------


def create_database(name: str) -> str:
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        "SECRET_KEY": "scaling-bench-secret-key-0123456789abcdef",
        "TRUSTED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": "redis://127.0.0.1:6379/14",
    }
    try:
        subprocess.run(
            [str(Path(sys.executable).parent / "flask"), "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except BaseException:
        drop_database(name)
        raise
    return f"{SERVER} dbname={name}"


def drop_database(name: str) -> None:
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_months(conn: psycopg.Connection) -> None:
    """The 25 bench months as partitions (the app's own code, as the nightly job runs it)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from webapp.services.history import partitions as hp

    dsn = conn.info.dsn
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    with Session(engine) as session:
        hp.ensure_partitions(session, month_bounds(FIRST_MONTH)[0], months_ahead=MONTHS - 1)
        session.commit()
    engine.dispose()


def partitions(conn: psycopg.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'membership_events'::regclass AND c.relname ~ '_y[0-9]{4}m[0-9]{2}$' ORDER BY 1"
        )
    ]


# -- history -------------------------------------------------------------------------------


def add_history(conn: psycopg.Connection, rows: int) -> None:
    """``rows`` more events, evenly over the monthly partitions present."""
    bench = set(months_from(FIRST_MONTH, MONTHS))
    present = [m for m in ((int(n[-7:-3]), int(n[-2:])) for n in partitions(conn)) if m in bench]
    per_month = rows // len(present)
    conn.execute("SET synchronous_commit = off")
    started, done = time.perf_counter(), 0
    for month in present:
        lo, hi = month_bounds(month)
        span = int((hi - lo).total_seconds())
        left = per_month
        while left > 0:
            n = min(CHUNK, left)
            conn.execute(
                "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
                "SELECT 1 + (g * 2654435761) %% 10000000, 1 + g %% %(segments)s, 'SEG_' || (1 + g %% %(segments)s), "
                "CASE WHEN g %% 2 = 0 THEN 'added' ELSE 'removed' END, 'api', "
                f"%(lo)s + {TIME_EXPR[ORDER]} * interval '1 second', '' "
                "FROM generate_series(CAST(%(start)s AS bigint), CAST(%(end)s AS bigint)) g",
                {
                    "segments": SEGMENTS,
                    "lo": lo,
                    "span": span,
                    "start": done + 1,
                    "end": done + n,
                    "first": done + 1 - (per_month - left),
                    "per_month": per_month,
                },
            )
            conn.commit()
            done += n
            left -= n
        say(
            f"    {month[0]}-{month[1]:02d}: {done:,} rows added, {done / (time.perf_counter() - started):,.0f} rows/s"
        )
    conn.execute("SET synchronous_commit = on")
    conn.execute("ANALYZE membership_events")
    conn.commit()


def history_figures(conn: psycopg.Connection, label: str) -> None:
    total = conn.execute("SELECT count(*) FROM membership_events").fetchone()[0]
    conn.commit()
    record(f"history {label}: rows", total)
    sizes = conn.execute(
        "SELECT sum(pg_table_size(relid)), sum(pg_indexes_size(relid)) "
        "FROM pg_partition_tree('membership_events')"
    ).fetchone()
    record(f"history {label}: table size (heap+toast, GiB)", round(sizes[0] / 2**30, 2))
    record(f"history {label}: index size (GiB)", round(sizes[1] / 2**30, 2))
    record(f"history {label}: bytes per row (all)", round((sizes[0] + sizes[1]) / max(total, 1), 1))
    conn.commit()
    lo, hi = month_bounds(REPORT_MONTH)
    bounds = {"lo": lo, "hi": hi}
    record(f"history {label}: month rows", conn.execute(COUNT, bounds).fetchone()[0])
    conn.commit()
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + ROWS, bounds))
    record(
        f"history {label}: partitions in the month's plan",
        sorted({w for w in plan.replace("(", " ").split() if w.startswith("membership_events_")}),
    )
    for attempt in ("1st run", "2nd run"):
        count_s = timed(lambda: conn.execute(COUNT, bounds).fetchone())
        month_rows = conn.execute(COUNT, bounds).fetchone()[0]
        conn.commit()
        streamed = 0

        def stream():
            nonlocal streamed
            with conn.transaction(), conn.cursor(name="month") as cursor:
                cursor.itersize = 10_000
                cursor.execute(ROWS, bounds)
                for _ in cursor:
                    streamed += 1

        stream_s = timed(stream)
        assert streamed == month_rows, (streamed, month_rows)
        RESULTS[f"history {label}: month rows"] = month_rows
        record(f"history {label}: month count(*) s ({attempt})", round(count_s, 3))
        record(f"history {label}: month rows streamed s ({attempt})", round(stream_s, 2))


def user_history_figures(conn: psycopg.Connection, label: str, reads: int = 500) -> None:
    """The stored part of one user's history (webapp.services.history.replay): no time bound, so one
    index probe per partition."""
    rng = random.Random(7)
    times = []
    for _ in range(reads):
        user = rng.randint(1, 10_000_000)  # the ids add_history writes
        started = time.perf_counter()
        conn.execute(
            "SELECT * FROM membership_events WHERE user_id = %s ORDER BY occurred_at, id", (user,)
        ).fetchall()
        times.append(time.perf_counter() - started)
    conn.commit()
    times.sort()
    record(f"history {label}: one user's events x{reads} p50 ms", round(statistics.median(times) * 1000, 2))
    record(
        f"history {label}: one user's events x{reads} p99 ms",
        round(times[int(len(times) * 0.99) - 1] * 1000, 2),
    )


def retention_figures(conn: psycopg.Connection, label: str) -> None:
    oldest = partitions(conn)[0]
    rows = conn.execute(f"SELECT count(*) FROM {oldest}").fetchone()[0]
    # The same rows in a plain table with the partition's indexes, for the DELETE.
    conn.execute(f"CREATE TABLE retention_copy (LIKE {oldest} INCLUDING ALL)")
    conn.execute(f"INSERT INTO retention_copy SELECT * FROM {oldest}")
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE retention_copy")
    lo, hi = month_bounds((int(oldest[-7:-3]), int(oldest[-2:])))
    delete_s = timed(
        lambda: conn.execute(
            "DELETE FROM retention_copy WHERE occurred_at >= %s AND occurred_at < %s", (lo, hi)
        )
    )
    vacuum_s = timed(lambda: conn.execute("VACUUM retention_copy"))
    drop_s = timed(lambda: conn.execute(f"DROP TABLE {oldest}"))
    conn.execute("DROP TABLE retention_copy")
    conn.autocommit = False
    record(f"history {label}: retention month rows ({oldest})", rows)
    record(f"history {label}: DELETE of the month s (copy)", round(delete_s, 2))
    record(f"history {label}: VACUUM after the DELETE s (copy)", round(vacuum_s, 2))
    record(f"history {label}: DROP TABLE of the partition s", round(drop_s, 3))


# -- memberships ---------------------------------------------------------------------------


def memberships_figures(conn: psycopg.Connection, rows: int, reads: int) -> None:
    users = rows // 5
    conn.execute(
        "INSERT INTO segments (slug, description, rollout_basis_points, salt, created_at) "
        "SELECT 'M_' || g, '', 0, md5(g::text), now() FROM generate_series(1, %s) g",
        (SEGMENTS,),
    )
    first = conn.execute("SELECT min(id) FROM segments WHERE slug LIKE 'M\\_%%'").fetchone()[0]
    conn.execute("SET synchronous_commit = off")
    started = time.perf_counter()
    for lo in range(0, users, CHUNK // 5):
        hi = min(users, lo + CHUNK // 5)
        conn.execute(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
            "SELECT u, %(first)s + (u * 7 + k * 13) %% %(segments)s, now(), NULL "
            "FROM generate_series(CAST(%(lo)s AS bigint), CAST(%(hi)s AS bigint)) u, generate_series(0, 4) k",
            {"first": first, "segments": SEGMENTS, "lo": lo + 1, "hi": hi},
        )
        conn.commit()
    conn.execute("SET synchronous_commit = on")
    conn.execute("ANALYZE memberships")
    conn.commit()
    total = conn.execute("SELECT count(*) FROM memberships").fetchone()[0]
    conn.commit()
    record("memberships: rows", total)
    record("memberships: load s", round(time.perf_counter() - started, 1))
    sizes = conn.execute("SELECT pg_table_size('memberships'), pg_indexes_size('memberships')").fetchone()
    record("memberships: table + index size (GiB)", round((sizes[0] + sizes[1]) / 2**30, 2))
    conn.commit()
    conn.autocommit = True
    rng = random.Random(5)
    times = []
    for _ in range(reads):
        user = rng.randint(1, users)
        started = time.perf_counter()
        found = conn.execute(USER_ROWS, {"user": user}).fetchall()
        times.append(time.perf_counter() - started)
        assert len(found) == 6, found  # five memberships and the catalog version
    conn.autocommit = False
    times.sort()
    record(f"memberships: USER_ROWS x{reads} p50 ms", round(statistics.median(times) * 1000, 3))
    record(f"memberships: USER_ROWS x{reads} p99 ms", round(times[int(len(times) * 0.99) - 1] * 1000, 3))
    record(f"memberships: USER_ROWS x{reads} max ms", round(times[-1] * 1000, 3))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--history", default="10M,30M", help="history sizes, reached in turn (e.g. 10M,30M,100M)"
    )
    parser.add_argument("--memberships", default="10M")
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument(
        "--order",
        choices=sorted(TIME_EXPR),
        default="time",
        help="history rows in time order (default) or scattered within each month",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    global ORDER
    ORDER = RESULTS["history order"] = args.order
    name = f"scale_{os.getpid()}"
    say(f"database {name}")
    dsn = create_database(name)
    try:
        with psycopg.connect(dsn) as conn:
            RESULTS["server"] = conn.execute("SELECT version()").fetchone()[0]
            RESULTS["settings"] = dict(
                conn.execute(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                    "('shared_buffers', 'work_mem', 'max_wal_size', 'maintenance_work_mem')"
                ).fetchall()
            )
            RESULTS["cpus"] = os.cpu_count()
            conn.commit()
            if size(args.memberships):
                say(f"memberships {size(args.memberships):,}")
                memberships_figures(conn, size(args.memberships), args.reads)
            ensure_months(conn)
            have = 0
            for label in args.history.split(","):
                target = size(label)
                say(f"history to {target:,} rows")
                started = time.perf_counter()
                add_history(conn, target - have)
                record(f"history {label}: load s", round(time.perf_counter() - started, 1))
                history_figures(conn, label)
                user_history_figures(conn, label)
                retention_figures(conn, label)
                have = conn.execute("SELECT count(*) FROM membership_events").fetchone()[0]
                conn.commit()
    finally:
        if not args.keep:
            drop_database(name)
    say(f"written {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
