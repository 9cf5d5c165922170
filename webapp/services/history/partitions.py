"""Monthly partitions of the history tables (RANGE on ``occurred_at``): ``membership_events``
(migration 0007) and ``trait_events`` (migration 0018), each managed alike (``parent``).

One partition per UTC month, ``<parent>_yYYYYmMM``, plus ``<parent>_default``
for rows outside every month created. The nightly job creates the coming months ahead
(:func:`ensure_partitions`), so rows normally never land in the default partition, and drops
the months past ``HISTORY_RETENTION_MONTHS`` (:func:`drop_partitions_before`): a DROP TABLE of
one partition instead of a DELETE of its rows.

A partition is created as a plain table, given the default partition's rows of its month
(if any: a month the job did not create in time), and attached: ATTACH takes a SHARE UPDATE
EXCLUSIVE lock on the parent, which does not wait for reads or writes in progress. DROP takes
an ACCESS EXCLUSIVE one. Both run under a short ``lock_timeout``: rather than queue behind a
long report and block every writer behind it, the step fails and the next night retries
(months are created three ahead).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import text

from webapp.services.common import DbSession

PARENT = "membership_events"
DEFAULT = "membership_events_default"
PARENTS = (PARENT, "trait_events")  # every partitioned history table: the nightly job keeps each
PARTITION_RE = re.compile(r"membership_events_y(\d{4})m(\d{2})")
_ANY_PARTITION_RE = re.compile(rf"(?:{'|'.join(PARENTS)})_(?:y\d{{4}}m\d{{2}}|default)")
LOCK_TIMEOUT = "5s"

Month = tuple[int, int]  # (year, month)


def partition_name(month: Month, parent: str = PARENT) -> str:
    return f"{parent}_y{month[0]:04d}m{month[1]:02d}"


def _default(parent: str) -> str:
    return f"{parent}_default"


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the partitions this module manages, of any parent (the models
    declare only the parents)."""
    return _ANY_PARTITION_RE.fullmatch(name) is not None


def add_months(month: Month, count: int) -> Month:
    index = month[0] * 12 + month[1] - 1 + count
    return index // 12, index % 12 + 1


def month_of(moment: datetime) -> Month:
    moment = moment.astimezone(UTC)
    return moment.year, moment.month


def month_start(month: Month) -> datetime:
    return datetime(month[0], month[1], 1, tzinfo=UTC)


def retention_cutoff(now: datetime, months: int) -> datetime | None:
    """Start of the month ``months`` before ``now``'s (rows before it are past retention);
    None when ``months`` is 0 (keep forever)."""
    return month_start(add_months(month_of(now), -months)) if months > 0 else None


def partitions(session: DbSession, parent: str = PARENT) -> dict[Month, str]:
    """The monthly partitions attached to ``parent``, by month."""
    names = session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": parent},
    ).scalars()
    pattern = re.compile(rf"{parent}_y(\d{{4}})m(\d{{2}})")
    found = {}
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found[int(match[1]), int(match[2])] = name
    return found


def ensure_partitions(
    session: DbSession, now: datetime, months_ahead: int = 3, parent: str = PARENT
) -> list[str]:
    """Create the partitions of ``now``'s month and the ``months_ahead`` following ones that do
    not exist yet, moving into each the default partition's rows of its month. Idempotent;
    returns the names created. Runs in the session's transaction (the caller commits)."""
    existing = partitions(session, parent)
    first = month_of(now)
    created = []
    with _lock_timeout(session):
        for month in (add_months(first, n) for n in range(months_ahead + 1)):
            if month in existing:
                continue
            name, bounds = (
                partition_name(month, parent),
                {"lo": month_start(month), "hi": month_start(add_months(month, 1))},
            )
            session.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {name} "
                    f"(LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )
            )
            session.execute(
                text(
                    f"WITH moved AS (DELETE FROM {_default(parent)} WHERE occurred_at >= :lo AND occurred_at < :hi RETURNING *) "
                    f"INSERT INTO {name} SELECT * FROM moved"
                ),
                bounds,
            )
            session.execute(
                text(
                    f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES "
                    f"FROM ('{bounds['lo'].isoformat()}') TO ('{bounds['hi'].isoformat()}')"
                )
            )
            created.append(name)
    return created


def drop_partitions_before(session: DbSession, cutoff: datetime, parent: str = PARENT) -> list[str]:
    """Drop every monthly partition whose whole month is before ``cutoff`` (and delete the
    default partition's rows before it); returns the names dropped. The caller commits."""
    dropped = []
    with _lock_timeout(session):
        for month, name in sorted(partitions(session, parent).items()):
            if month_start(add_months(month, 1)) <= cutoff:
                session.execute(text(f"DROP TABLE {name}"))
                dropped.append(name)
        session.execute(
            text(f"DELETE FROM {_default(parent)} WHERE occurred_at < :cutoff"), {"cutoff": cutoff}
        )
    return dropped


@contextmanager
def _lock_timeout(session: DbSession) -> Iterator[None]:
    """``lock_timeout`` set for the statements inside, then put back (transaction-local; after
    an error the transaction is aborted and its rollback restores it)."""
    previous = session.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    session.execute(text("SELECT set_config('lock_timeout', :value, true)"), {"value": LOCK_TIMEOUT})
    yield
    session.execute(text("SELECT set_config('lock_timeout', :value, true)"), {"value": previous})
