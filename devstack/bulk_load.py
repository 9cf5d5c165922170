"""Bulk loading for the bench and the performance tests: memberships COPY-ed in by the million."""

from __future__ import annotations

import time

import sqlalchemy as sa


def copy_memberships(engine, prefix: str, first_user: int, last_user: int, chunk: int = 100_000) -> float:
    """COPY ``(user, segment)`` rows into memberships: every user in first..last is an explicit
    member of every segment whose slug starts with ``prefix``; then VACUUM ANALYZE (the state
    autovacuum leaves a table in, and no autovacuum starts during a measurement) and CHECKPOINT.
    Returns the seconds taken."""
    started = time.perf_counter()
    with engine.connect() as conn:
        segment_ids = conn.scalars(
            sa.text("SELECT id FROM segments WHERE slug LIKE :p || '%' ORDER BY id"), {"p": prefix}
        ).all()
    added_at = "2030-01-01 00:00:00+00"
    tails = [f"\t{sid}\t{added_at}\n" for sid in segment_ids]
    raw = engine.raw_connection()
    try:
        with (
            raw.cursor() as cur,
            cur.copy("COPY memberships (user_id, segment_id, added_at) FROM STDIN") as copy,
        ):
            for low in range(first_user, last_user + 1, chunk):
                copy.write(
                    "".join(
                        f"{uid}{tail}"
                        for uid in range(low, min(low + chunk, last_user + 1))
                        for tail in tails
                    )
                )
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) memberships"))
        conn.execute(sa.text("CHECKPOINT"))
    return time.perf_counter() - started
