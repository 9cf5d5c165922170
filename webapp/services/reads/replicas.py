"""Hot reads on PostgreSQL streaming replicas, read-your-writes by token (issue 25).

Which server answers a hot read (``read_path.Reader``: the single read, the batch lookup, and
whatever else reads through it) is decided here and nowhere else:

- **A read with a token** (the ``Segments-Consistency`` header a write answered with: the
  primary's WAL insert position after its commit) is served by a replica only once that
  replica has replayed past the token. The check is *its own statement before the read*,
  both sent in one round trip (libpq pipeline mode; the connection is in autocommit, so each
  statement takes its own snapshot, the read's after the check has passed): a check in the
  same statement as the read would be evaluated after the read's snapshot was taken, and pass
  while the read is stale. A replica behind is asked again for up to ``REPLICA_WAIT_MS`` (at
  most ``REPLICA_MAX_WAITERS`` reads of the process waiting at once), then the primary reads.
- **A read without a token** goes to the primary in ``exact`` mode (the default: adding
  replicas changes no answer). In ``bounded`` mode a replica serves it while its staleness is
  within ``REPLICA_MAX_LAG_MS``. Staleness is measured by LSN, not by the replay timestamp
  (which grows on an idle primary): this process keeps samples of the primary's WAL position
  with the time each was read (every token it mints is one; a refresh reads another when the
  estimate grows old), and a replica that has replayed position ``L`` holds everything the
  primary had committed at the time of the newest sample at or before ``L``. A replica past the
  bound is skipped and asked again a quarter of the bound later.
- **Fallbacks.** A read no replica can serve reads the primary; at most
  ``REPLICA_MAX_FALLBACKS`` of a process's reads do so at once when the replicas answered but
  were behind (a lag spike cannot send every read there); one more waits up to a second for a
  slot, then answers 503 ``replicas_behind``. Replicas down or failing are not a lag spike:
  those reads go to the primary whatever the count, as they did before replicas existed.
- **Failures.** A replica whose connection fails is skipped for ``REPLICA_RETRY_SECONDS``
  (its pooled connections dropped), then tried again: it rejoins by itself.

The catalog (rollouts, groups, schedules) needs nothing more: it is read on the same
connection after the users' rows, and the read path already matches its version to theirs.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from webapp.errors import ReplicasBehind
from webapp.rules import CONSISTENCY_HEADER
from webapp.telemetry.metrics import REPLICA_FALLBACKS, REPLICA_FALLBACKS_REFUSED, REPLICA_READS

log = logging.getLogger(__name__)
T = TypeVar("T")

HEADER = CONSISTENCY_HEADER  # the token: response header of a write, request header of a read
ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")  # (the request header in a WSGI environ)
EXACT, BOUNDED = "exact", "bounded"
MODES = (EXACT, BOUNDED)
# Reasons a read went where it went (the metrics' labels).
TOKEN, EXACT_MODE, INVALID = "token", "exact", "invalid_token"
BEHIND, LAGGING, UNREACHABLE = "behind", "lagging", "unreachable"
FALLBACK_QUEUE_SECONDS = 1.0  # a read past REPLICA_MAX_FALLBACKS waits this long for a slot, then 503
# On the primary after a commit: the token (see primary_position).
POSITION = """SELECT CASE WHEN current_setting('synchronous_commit') = 'off'
THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END::text"""
REPLAY = "SELECT pg_last_wal_replay_lsn()::text"  # on a replica: how far it has replayed (NULL: not one)
_TOKEN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
SAMPLES = 256  # primary positions kept per process
WAL_PAGE, WAL_SEGMENT = 8192, 16 * 1024 * 1024  # XLOG_BLCKSZ, wal_segment_size (the defaults)
SHORT_PAGE_HEADER, LONG_PAGE_HEADER = 24, 40  # SizeOfXLogShortPHD, SizeOfXLogLongPHD

# Errors that say a server is unreachable (its connection failed or could not be had), against
# others (a statement cancelled by a recovery conflict): both skip the replica for this read,
# only the first for REPLICA_RETRY_SECONDS.
_UNREACHABLE = (psycopg.OperationalError, sa_exc.OperationalError, sa_exc.TimeoutError)
_FAILED = (psycopg.Error, sa_exc.DBAPIError, sa_exc.TimeoutError)


def parse_token(text: str) -> int | None:
    """A token's WAL position (PostgreSQL's ``pg_lsn`` text form, ``16/B374D848``), or None."""
    match = _TOKEN.fullmatch(text.strip())
    return None if match is None else int(match[1], 16) << 32 | int(match[2], 16)


def format_token(lsn: int) -> str:
    """A WAL position as PostgreSQL writes a ``pg_lsn``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class Behind(Exception):
    """A replica's check found it had not replayed the read's token (``replayed``: how far it
    had, None when the server is not in recovery)."""

    def __init__(self, replayed: int | None):
        super().__init__(f"replica replayed {replayed}")
        self.replayed = replayed


@dataclass(frozen=True)
class ReplicaSettings:
    """The ``REPLICA_*`` settings (webapp/config.py), checked."""

    mode: str = EXACT
    max_lag: float = 1.0  # seconds (REPLICA_MAX_LAG_MS)
    wait: float = 0.005  # seconds (REPLICA_WAIT_MS)
    max_waiters: int = 2
    max_fallbacks: int = 4
    retry: float = 5.0  # seconds an unreachable replica is skipped

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> ReplicaSettings:
        mode = str(config.get("REPLICA_READS", EXACT)).strip().lower()
        if mode not in MODES:
            raise RuntimeError(f"REPLICA_READS must be exact or bounded, not {mode!r}")
        settings = cls(
            mode,
            float(config.get("REPLICA_MAX_LAG_MS", 1000)) / 1000,
            float(config.get("REPLICA_WAIT_MS", 5)) / 1000,
            int(config.get("REPLICA_MAX_WAITERS", 2)),
            int(config.get("REPLICA_MAX_FALLBACKS", 4)),
            float(config.get("REPLICA_RETRY_SECONDS", 5)),
        )
        if min(settings.max_lag, settings.wait, settings.retry) < 0 or settings.max_fallbacks < 1:
            raise RuntimeError("REPLICA_* durations must be >= 0 and REPLICA_MAX_FALLBACKS >= 1")
        return settings


def replica_urls(configured: str | Sequence[str] | None) -> list[str]:
    """``DATABASE_REPLICA_URLS`` as a list (separated by commas and/or spaces)."""
    if not configured:
        return []
    items = configured.replace(",", " ").split() if isinstance(configured, str) else list(configured)
    return [item.strip() for item in items if item.strip()]


def scalar(engine: Engine, sql: str) -> str | None:
    """One text value from a pooled autocommit connection of ``engine`` (a connection the
    server dropped is replaced and the statement sent again once)."""
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if not driver.autocommit:
                driver.autocommit = True
            row = driver.execute(sql).fetchone()
            return None if row is None or row[0] is None else str(row[0])
        except psycopg.OperationalError:
            connection.invalidate()
            if attempt == 2:
                raise
        finally:
            connection.close()
    raise AssertionError("unreachable")


def primary_position(engine: Engine) -> int:
    """The primary's WAL position now, at or past the commit record of every transaction
    committed before this call, and one its replicas will reach without waiting for more writes.

    With ``synchronous_commit`` on (the default; ``local``, ``remote_write`` and ``remote_apply``
    too) a COMMIT returns once its record is flushed, so the *flush* position is past it. The
    *insert* position is past it too whatever the setting, but it may also be past records no
    commit has flushed yet (a standby snapshot, a prune): measured here on an idle primary,
    insert 0/30ADEF0 against flush 0/30ADE58 for as long as nothing else committed, so a replica
    that had everything stayed short of such a token. With ``synchronous_commit = off`` (the
    COMMIT returns before its flush) only the insert position is safe: then it is the token,
    and the WAL writer flushes asynchronous commits within ``wal_writer_delay``. (The setting
    read is the server's and this role's; the app sets it nowhere per transaction.)
    See also :func:`record_end`."""
    return committed_position(scalar(engine, POSITION))


def committed_position(text: str | None) -> int:
    """POSITION's answer as a token's position (see :func:`record_end`)."""
    lsn = None if text is None else parse_token(text)
    if lsn is None:
        raise RuntimeError(f"the primary's WAL position read {text!r}")
    return record_end(lsn)


def record_end(lsn: int) -> int:
    """An insert position as a position a replica's replay can reach. When the last record
    ended exactly at a WAL page's end, the insert position lies past the next page's header
    (24 bytes; 40 at a segment's start), where no record ends: a replica that replayed it all
    would stay short of it until the primary wrote again. The page's end is the same point in
    the WAL (no record ends inside a header; the one before ends at or before the page's end),
    so that is the token. (8 kB pages and 16 MB segments, PostgreSQL's defaults; with others
    the position is moved back at most 40 bytes inside a page, which no commit record fits in:
    never past a commit.)"""
    if lsn % WAL_SEGMENT == LONG_PAGE_HEADER:
        return lsn - LONG_PAGE_HEADER
    if lsn % WAL_PAGE == SHORT_PAGE_HEADER:
        return lsn - SHORT_PAGE_HEADER
    return lsn


class Positions:
    """The primary's WAL positions with when each was read (monotonic seconds), newest last.
    A sample ``(t, L)`` read after ``t`` says: everything committed before ``t`` lies at or
    before ``L``."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self._lock = threading.Lock()

    def add(self, at: float, lsn: int) -> None:
        with self._lock:
            if self._samples and (lsn < self._samples[-1][1] or at < self._samples[-1][0]):
                return  # (a concurrent sample got there first; theirs is as good)
            self._samples.append((at, lsn))

    def held_at(self, lsn: int) -> float | None:
        """The newest time before which everything committed lies at or before ``lsn``."""
        with self._lock:
            for at, position in reversed(self._samples):
                if position <= lsn:
                    return at
        return None


class Replica:
    """One streaming replica as this process sees it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = f"{engine.url.host}:{engine.url.port}/{engine.url.database}"
        self.replayed = -1  # the highest replay position seen (-1: none yet)
        self.refreshed = float("-inf")  # when its replay position was last asked for
        self.down_until = float("-inf")
        self.refreshing = threading.Lock()

    def saw(self, replayed: int | None) -> None:
        if replayed is not None and replayed > self.replayed:
            self.replayed = replayed

    def up(self, now: float) -> bool:
        return now >= self.down_until


# A read on one server: ``read(engine, token)`` with ``token`` the WAL position the server
# must have replayed (checked before the read, in the same round trip; Behind if not), or None.
Read = Callable[[Engine, int | None], T]


class Replicas:
    """Where the hot reads go, for one app: the primary's read engine and its replicas'."""

    def __init__(self, primary: Engine, replicas: Sequence[Engine], settings: ReplicaSettings):
        self.primary, self.settings = primary, settings
        self.replicas = [Replica(engine) for engine in replicas]
        self.positions = Positions()
        self.counts: Counter[tuple[str, str]] = Counter()  # (served_by, reason): this process's, for tests
        self._turn = itertools.count()
        self._waiters = threading.BoundedSemaphore(max(settings.max_waiters, 0) or 1)
        self._no_waiting = settings.max_waiters <= 0 or settings.wait <= 0
        self._fallbacks = threading.BoundedSemaphore(settings.max_fallbacks)
        self._read_children = {
            (served, reason): REPLICA_READS.labels(served, reason)
            for served, reasons in (
                ("replica", (TOKEN, BOUNDED)),
                ("primary", (EXACT_MODE, INVALID, BEHIND, LAGGING, UNREACHABLE)),
            )
            for reason in reasons
        }

    # -- the token -------------------------------------------------------------------------

    def minted(self, at: float, lsn: int) -> None:
        """A token read from the primary after ``at``: a sample of its position for free."""
        self.positions.add(at, lsn)

    # -- routing ---------------------------------------------------------------------------

    def route(self, read: Read[T], token: str | None) -> T:
        """``read`` on the server the rules above choose for a read sending ``token``."""
        lsn = None if token is None else parse_token(token)
        if token is not None and lsn is None:  # (not a token of ours: the exact answer)
            return self._served(read(self.primary, None), "primary", INVALID)
        if lsn is None and self.settings.mode == EXACT:
            return self._served(read(self.primary, None), "primary", EXACT_MODE)
        now = time.monotonic()
        behind: list[Replica] = []
        lagging = False
        for replica in self._in_turn(now):
            if lsn is None and not self._fresh(replica, now):
                lagging = True
                continue
            try:
                result = read(replica.engine, lsn)
            except Behind as exc:
                replica.saw(exc.replayed)
                behind.append(replica)
                continue
            except _FAILED as exc:
                self._failed(replica, exc)
                continue
            return self._served(result, "replica", BOUNDED if lsn is None else TOKEN)
        if lsn is not None and behind:
            caught_up = self._wait(read, lsn, behind)
            if caught_up is not None:
                return self._served(caught_up[0], "replica", TOKEN)
        if behind or lagging:
            return self._fallback(read, BEHIND if behind else LAGGING)
        REPLICA_FALLBACKS.labels(UNREACHABLE).inc()
        return self._served(read(self.primary, None), "primary", UNREACHABLE)

    def _in_turn(self, now: float) -> list[Replica]:
        """The replicas that are up, each read starting at the next one (spreading the reads)."""
        up = [replica for replica in self.replicas if replica.up(now)]
        if len(up) > 1:
            start = next(self._turn) % len(up)
            up = up[start:] + up[:start]
        return up

    def _wait(self, read: Read[T], lsn: int, behind: list[Replica]) -> tuple[T] | None:
        """Ask the replicas that were behind again until one has replayed ``lsn``, for up to
        REPLICA_WAIT_MS; None if none did (or REPLICA_MAX_WAITERS reads wait already)."""
        if self._no_waiting or not self._waiters.acquire(blocking=False):
            return None
        try:
            deadline = time.monotonic() + self.settings.wait
            while behind and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(0.001, left))
                behind.sort(key=lambda replica: -replica.replayed)
                for replica in list(behind):
                    try:
                        return (read(replica.engine, lsn),)
                    except Behind as exc:
                        replica.saw(exc.replayed)
                    except _FAILED as exc:
                        self._failed(replica, exc)
                        behind.remove(replica)
            return None
        finally:
            self._waiters.release()

    def _fallback(self, read: Read[T], reason: str) -> T:
        """The primary for a read the replicas were too far behind for, within the cap."""
        REPLICA_FALLBACKS.labels(reason).inc()
        if not self._fallbacks.acquire(timeout=FALLBACK_QUEUE_SECONDS):
            REPLICA_FALLBACKS_REFUSED.labels(reason).inc()
            raise ReplicasBehind()
        try:
            return self._served(read(self.primary, None), "primary", reason)
        finally:
            self._fallbacks.release()

    def _served(self, result: T, served_by: str, reason: str) -> T:
        self._read_children[(served_by, reason)].inc()
        self.counts[(served_by, reason)] += 1
        return result

    def _failed(self, replica: Replica, exc: BaseException) -> None:
        """A replica's read failed: skip it for REPLICA_RETRY_SECONDS if unreachable."""
        if not isinstance(exc, _UNREACHABLE):
            log.warning("a read on replica %s failed (%s); read elsewhere", replica.name, exc)
            return
        if replica.up(time.monotonic()):
            log.warning(
                "replica %s unreachable (%s); skipped for %.0f s",
                replica.name,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                self.settings.retry,
            )
        replica.down_until = time.monotonic() + self.settings.retry
        replica.engine.dispose()  # (its pooled connections are to a server that went away)

    # -- staleness (bounded mode) ------------------------------------------------------------

    def staleness(self, replica: Replica, now: float) -> float:
        """Seconds of commits the replica may miss at most (infinite when unknown)."""
        held = self.positions.held_at(replica.replayed)
        return float("inf") if held is None else max(now - held, 0.0)

    def _fresh(self, replica: Replica, now: float) -> bool:
        """Whether the replica is within REPLICA_MAX_LAG_MS, asking it and the primary again
        when the estimate has grown past half the bound (at most every quarter of it)."""
        bound = self.settings.max_lag
        if self.staleness(replica, now) <= bound / 2:
            return True
        if now - replica.refreshed >= bound / 4 and replica.refreshing.acquire(blocking=False):
            try:
                self._refresh(replica)
            finally:
                replica.refreshing.release()
        return self.staleness(replica, time.monotonic()) <= bound

    def _refresh(self, replica: Replica) -> None:
        """Sample the primary's position, then ask the replica how far it has replayed."""
        replica.refreshed = at = time.monotonic()
        try:
            self.positions.add(at, primary_position(self.primary))
        except _FAILED:
            log.warning("reading the primary's WAL position failed", exc_info=True)
            return
        try:
            replayed = scalar(replica.engine, REPLAY)
        except _FAILED as exc:
            self._failed(replica, exc)
            return
        replica.saw(None if replayed is None else parse_token(replayed))
