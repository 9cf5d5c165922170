"""How often each segment is read, and when it was last read: so PMs can find dead segments.

A read of a user's segments (the hot path and Flask alike, through ``read_path.Reader.answer``)
counts one read for each segment in its answer: a dict increment under an uncontended lock, in
this process's memory. A daemon thread adds the counts every ``READ_COUNTS_FLUSH_SECONDS`` to the
Prometheus counter ``segments_segment_reads_total`` and to one Redis hash shared by every process
and machine (``count:<slug>`` += n, ``last:<slug>`` = the later of the two times, ``started`` = when
counting began), with a short timeout and never on the request path. While Redis is unreachable
the counts wait in memory (one entry per segment, so memory stays bounded) and go out with the
next flush that succeeds; a process's last few seconds are flushed when it exits.

The segment page reads the hash (:func:`last_read`, the template global ``segment_last_read``)
with the same short timeout and says "unknown" when Redis does not answer.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from webapp.platform.redis_client import OutageLog
from webapp.telemetry.metrics import READS_KEY, SEGMENT_READS, quick_redis

if TYPE_CHECKING:
    from webapp.services.reads.catalog import ActiveSegment

log = logging.getLogger(__name__)

# KEYS[1]: the hash; ARGV: now, then (slug, count, last read time) triples. "last" only moves forward
# (processes on machines whose clocks differ a little never move it back).
FLUSH_SCRIPT = """
redis.call('HSETNX', KEYS[1], 'started', ARGV[1])
for i = 2, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], 'count:' .. ARGV[i], ARGV[i + 1])
  local last = tonumber(redis.call('HGET', KEYS[1], 'last:' .. ARGV[i]) or '0')
  if tonumber(ARGV[i + 2]) > last then redis.call('HSET', KEYS[1], 'last:' .. ARGV[i], ARGV[i + 2]) end
end
return 1
"""

SLUG = attrgetter("slug")


class ReadCounter:
    """This process's read counts and the thread that sends them on."""

    def __init__(self) -> None:
        self.redis_url: str | None = None
        self.interval = 5.0
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child counts (and flushes) its own

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._backlog: dict[str, list[float]] = {}  # slug -> [count, last read] not yet in Redis
        self._started = False
        self._wake = threading.Event()
        self._outage = OutageLog("Redis (segment read counts)")

    def configure(self, app: Flask) -> None:
        self.redis_url = app.config["REDIS_URL"]
        self.interval = float(app.config["READ_COUNTS_FLUSH_SECONDS"])

    def record(self, active: Iterable[ActiveSegment]) -> None:
        """Count one read of each segment in ``active`` (the request path: memory only)."""
        self._add(map(SLUG, active))

    def record_counts(self, counts: Mapping[str, int]) -> None:
        """Count reads already tallied per slug (the batch lookup: one merge, not one per entry)."""
        self._add(counts)

    def _add(self, reads: Iterable[str] | Mapping[str, int]) -> None:
        """Slugs read once each, or counts per slug (``Counter.update`` takes both, in C)."""
        if not self._started:
            self._start()
        with self._lock:
            self._pending.update(reads)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="segment-read-counts", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the thread die
                log.exception("segment read counts: flush failed")

    def discard(self) -> None:
        """Drop the counts not in Redis yet (a test session ending: nothing left for exit)."""
        with self._flush_lock, self._lock:
            self._pending.clear()
            self._backlog.clear()

    def flush(self) -> bool:
        """Move the counts to the Prometheus counter and to Redis; False if Redis did not take them
        (they are kept for the next flush)."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, Counter()
            now = time.time()
            for slug, count in pending.items():
                SEGMENT_READS.labels(slug).inc(count)
                waiting = self._backlog.setdefault(slug, [0, now])
                waiting[0] += count
                waiting[1] = now
            if not self._backlog or self.redis_url is None:
                return not self._backlog
            args: list[str | float | int] = [now]
            for slug, (reads, last) in self._backlog.items():
                args += [slug, int(reads), last]
            try:
                quick_redis(self.redis_url).eval(FLUSH_SCRIPT, 1, READS_KEY, *args)
            except Exception as exc:
                self._outage.failed(exc)
                return False
            self._outage.ok()
            self._backlog.clear()
            return True


COUNTER = ReadCounter()
record = COUNTER.record
record_counts = COUNTER.record_counts


def init_app(app: Flask) -> None:
    """This process's counts go to the app's Redis (the last app made, in a process with several);
    the segment page's partial gets :func:`last_read` as ``segment_last_read``."""
    COUNTER.configure(app)
    app.add_template_global(last_read, "segment_last_read")  # templates/segments/_last_read.html


atexit.register(lambda: COUNTER.flush() if COUNTER._pending or COUNTER._backlog else None)


@dataclass(frozen=True)
class LastRead:
    reads: int
    last_at: datetime | None
    since: datetime | None  # when counting began (the first flush this Redis took)


def last_read(slug: str) -> LastRead | None:
    """The segment's reads so far and its last read, from Redis; None when Redis does not answer
    (the page says "unknown")."""
    try:
        fields: list[Any] = quick_redis(current_app.config["REDIS_URL"]).hmget(  # type: ignore[assignment]
            READS_KEY, [f"count:{slug}", f"last:{slug}", "started"]
        )
        count, last, started = fields
    except Exception as exc:
        log.warning("segment page: read counts unavailable: %s", exc)
        return None

    def moment(raw: bytes | None) -> datetime | None:
        return datetime.fromtimestamp(float(raw), UTC) if raw else None

    return LastRead(int(count or 0), moment(last), moment(started))
