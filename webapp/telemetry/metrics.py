"""Prometheus metrics, served at ``/metrics`` (text format).

Where each number comes from:

- **Per process, summed over every gunicorn worker** (prometheus-client's multiprocess mode:
  each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``, which
  ``gunicorn.conf.py`` sets up and a scrape of any worker merges): request latency histograms by
  endpoint and status (their ``_count`` is the request count; the hot path's answers included),
  rate-limit rejections, cache hits and misses, per-segment reads. A worker that exits (recycled
  after ``max_requests``, or killed) has its files folded into one archive file per type by
  gunicorn's master (:func:`retire_process`), so the directory stays small and no count is lost.
- **From Redis at scrape time** (:class:`RedisCollector`, one pipelined round trip with a short
  timeout; Redis down leaves these out and sets ``segments_redis_up 0``, the rest still answers):
  RQ queue depth, job durations and failures (written by the RQ worker, on another machine
  perhaps: :func:`timed_job`), the last purge's time and count, each segment's last read.

Without ``PROMETHEUS_MULTIPROC_DIR`` (``flask run``, the tests) the values are this process's own.
"""

from __future__ import annotations

import functools
import glob
import hmac
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from flask import Flask, Response, current_app, has_app_context, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.utils import floatToGoString
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from webapp.platform.queue import QUEUE_NAME
from webapp.platform.redis_client import WEB_TIMEOUT, OutageLog

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
JOBS_KEY = "segments-metrics:jobs"  # Redis hash: job durations and failures, the last purge
READS_KEY = "segments-reads"  # Redis hash: count:<slug>, last:<slug>, started (webapp.telemetry.read_counts)
REGISTRY = CollectorRegistry()  # this process's metrics (without multiprocess mode)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))

REQUEST_SECONDS = Histogram(
    "segments_http_request_duration_seconds",
    "Time to answer an HTTP request, by Flask endpoint and status (the hot path's answers "
    "included); _count is the number of requests.",
    ["endpoint", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "segments_rate_limited",
    "Requests refused with 429 by a rate limit, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "segments_cache_requests",
    "Reach cache lookups (Redis) by cache name and result (hit, miss).",
    ["cache", "result"],
    registry=REGISTRY,
)
SEGMENT_READS = Counter(
    "segments_segment_reads",
    "Times a segment was in the answer of a read of a user's segments (counted in "
    "memory, added every few seconds).",
    ["segment"],
    registry=REGISTRY,
)
# (Labelled, as every metric here: a metric without labels makes its multiprocess file in every
# process that imports this module, gunicorn's master included, where nothing ever retires it.)
REQUEST_LOG_DROPPED = Counter(
    "segments_request_log_dropped",
    "Request log lines the log's stream refused (a closed pipe, a full non-blocking one).",
    ["stream"],
    registry=REGISTRY,
)

# Reads on streaming replicas (webapp/services/reads/replicas.py), only with DATABASE_REPLICA_URLS set.
REPLICA_READS = Counter(
    "segments_replica_reads",
    "Hot reads (single and batch) by the server that answered (replica, primary) and why: token "
    "(a replica had replayed the read's Segments-Consistency token), bounded (a token-less read "
    "within REPLICA_MAX_LAG_MS), exact (a token-less read in exact mode), invalid_token, or the "
    "fallback reasons of segments_replica_fallbacks.",
    ["served_by", "reason"],
    registry=REGISTRY,
)
REPLICA_FALLBACKS = Counter(
    "segments_replica_fallbacks",
    "Hot reads no replica could serve, sent to the primary, by reason: behind (no replica had "
    "replayed the read's token within REPLICA_WAIT_MS), lagging (bounded mode: every replica "
    "past REPLICA_MAX_LAG_MS), unreachable (every replica down or failing).",
    ["reason"],
    registry=REGISTRY,
)
REPLICA_FALLBACKS_REFUSED = Counter(
    "segments_replica_fallbacks_refused",
    "Hot reads answered 503 replicas_behind: REPLICA_MAX_FALLBACKS reads of the process were on the "
    "primary already and none finished within a second.",
    ["reason"],
    registry=REGISTRY,
)

_latency_children: dict[tuple[str, int], Any] = {}


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    """One answered request (the hot path calls this per request: a dict lookup and an observe)."""
    child = _latency_children.get((endpoint, status))
    if child is None:
        child = _latency_children[(endpoint, status)] = REQUEST_SECONDS.labels(endpoint, str(status))
    child.observe(seconds)


def rate_limited(endpoint: str) -> None:
    RATE_LIMITED.labels(endpoint).inc()


def request_log_dropped(stream: str) -> None:
    REQUEST_LOG_DROPPED.labels(stream).inc()


def cache_result(hit: bool, name: str) -> None:
    """Count one reach cache lookup of the cache ``name`` (e.g. "segment_stats") as a hit or a miss."""
    CACHE_REQUESTS.labels(name, "hit" if hit else "miss").inc()


# -- Redis, never blocking -----------------------------------------------------------------------

_clients: dict[str, Redis] = {}
_clients_lock = threading.Lock()


def quick_redis(url: str) -> Redis:
    """A client with WEB_TIMEOUT connect/socket timeouts and no retries (redis-py would otherwise
    retry with backoff): an unreachable Redis costs one timeout at most, never more."""
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url) or Redis.from_url(
                url,
                socket_timeout=WEB_TIMEOUT,
                socket_connect_timeout=WEB_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
            )
            _clients[url] = client
    return client


# -- jobs (the RQ worker writes, any web process reads) --------------------------------------------

_job_outage = OutageLog("Redis (job metrics)")


def timed_job(name: str) -> Callable[[F], F]:
    """Record each run of a job function: its duration and whether it raised (in Redis, so the web
    processes' /metrics see what workers on other machines did)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            started, ok = time.perf_counter(), False
            try:
                result = function(*args, **kwargs)
                ok = True
                return result
            finally:
                record_job(name, time.perf_counter() - started, ok)

        return run  # type: ignore[return-value]

    return decorate


def record_job(name: str, seconds: float, ok: bool) -> None:
    if not has_app_context():
        return
    bucket = next(i for i, bound in enumerate(JOB_BUCKETS) if seconds <= bound)
    try:
        with quick_redis(current_app.config["REDIS_URL"]).pipeline(transaction=False) as pipe:
            pipe.hincrby(JOBS_KEY, f"{name}:count", 1)
            pipe.hincrbyfloat(JOBS_KEY, f"{name}:sum", seconds)
            pipe.hincrby(JOBS_KEY, f"{name}:bucket:{bucket}", 1)
            if not ok:
                pipe.hincrby(JOBS_KEY, f"{name}:failed", 1)
            pipe.execute()
        _job_outage.ok()
    except Exception as exc:  # metrics never fail a job
        _job_outage.failed(exc)


def purge_done(removed: int) -> None:
    """The TTL purge finished: when, and how many memberships it removed."""
    if not has_app_context():
        return
    try:
        quick_redis(current_app.config["REDIS_URL"]).hset(
            JOBS_KEY, mapping={"purge:last_at": time.time(), "purge:last_removed": removed}
        )
        _job_outage.ok()
    except Exception as exc:
        _job_outage.failed(exc)


# -- scrape time -------------------------------------------------------------------------------------

QUEUE_KEYS = {
    "queued": Queue.redis_queue_namespace_prefix + QUEUE_NAME,
    **{
        state: registry.key_template.format(QUEUE_NAME)
        for state, registry in (
            ("started", StartedJobRegistry),
            ("scheduled", ScheduledJobRegistry),
            ("deferred", DeferredJobRegistry),
            ("failed", FailedJobRegistry),
        )
    },
}


class RedisCollector:
    """What lives in Redis, read with one pipelined round trip when /metrics is scraped."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "segments_redis_up",
            "1 if this scrape could read Redis (queue depth, jobs, last reads are missing otherwise).",
        )
        try:
            with quick_redis(self.redis_url).pipeline(transaction=False) as pipe:
                for state, key in QUEUE_KEYS.items():
                    (pipe.llen if state == "queued" else pipe.zcard)(key)
                pipe.hgetall(JOBS_KEY)
                pipe.hgetall(READS_KEY)
                *depths, jobs, reads = pipe.execute()
        except Exception as exc:
            log.warning("/metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue = GaugeMetricFamily(
            "segments_queue_jobs",
            "RQ jobs by state (queued = the queue's length).",
            labels=["queue", "state"],
        )
        for state, depth in zip(QUEUE_KEYS, depths, strict=True):
            queue.add_metric([QUEUE_NAME, state], depth)
        yield queue
        yield from _job_families(_decode(jobs))
        yield from _read_families(_decode(reads))


def _decode(raw: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _job_families(fields: dict[str, str]) -> Iterator[Metric]:
    durations = HistogramMetricFamily(
        "segments_job_duration_seconds", "Background job run times, by job.", labels=["job"]
    )
    failures = CounterMetricFamily(
        "segments_job_failures", "Background job runs that raised, by job.", labels=["job"]
    )
    for job in sorted({key.split(":", 1)[0] for key in fields if key.endswith(":count")}):
        total, buckets = 0.0, []
        for index, bound in enumerate(JOB_BUCKETS):
            total += float(fields.get(f"{job}:bucket:{index}", 0))
            buckets.append((floatToGoString(bound), total))
        durations.add_metric([job], buckets, float(fields.get(f"{job}:sum", 0)))
        failures.add_metric([job], float(fields.get(f"{job}:failed", 0)))
    yield durations
    yield failures
    purge_at = GaugeMetricFamily(
        "segments_last_purge_timestamp_seconds", "When the last TTL purge finished (Unix time)."
    )
    purge_count = GaugeMetricFamily("segments_last_purge_removed", "Memberships the last TTL purge removed.")
    if "purge:last_at" in fields:
        purge_at.add_metric([], float(fields["purge:last_at"]))
        purge_count.add_metric([], float(fields.get("purge:last_removed", 0)))
    yield purge_at
    yield purge_count


def _read_families(fields: dict[str, str]) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "segments_segment_last_read_timestamp_seconds",
        "When a segment was last in a read's answer, across every process (Unix time; a few seconds late).",
        labels=["segment"],
    )
    for key, value in sorted(fields.items()):
        if key.startswith("last:"):
            last.add_metric([key.removeprefix("last:")], float(value))
    yield last


class _Scrape:
    def __init__(self, *collectors: Any):
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def process_metrics() -> Any:
    """Every worker's metrics in multiprocess mode, else this process's own."""
    path = os.environ.get(MULTIPROC_ENV)
    return MultiProcessCollector(None, path) if path else REGISTRY


def metrics_view() -> Response:
    """``/metrics``: open, or with METRICS_TOKEN set only to ``Authorization: Bearer <METRICS_TOKEN>``."""
    token = current_app.config["METRICS_TOKEN"]
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = jsonify(
                {
                    "error": {
                        "code": "unauthorized",
                        "message": "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
                        "details": [],
                    }
                }
            )
            response.status_code = 401
            return response
    body = generate_latest(_Scrape(process_metrics(), RedisCollector(current_app.config["REDIS_URL"])))
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)


# -- gunicorn's master: a worker exited ----------------------------------------------------------------


def retire_process(pid: int, path: str | None = None) -> None:
    """Fold a dead process's counter and histogram files into ``<type>_archive.db`` and delete them
    (run by gunicorn's master in ``child_exit``, one at a time): without this every recycled
    worker leaves files that each scrape reads again, and the directory only grows."""
    path = path or os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    mark_process_dead(pid, path)
    for kind in ("counter", "histogram", "summary"):
        for dead in glob.glob(os.path.join(path, f"{kind}_{pid}.db")):
            _fold(dead, os.path.join(path, f"{kind}_archive.db"))


def _fold(dead: str, archive: str) -> None:
    """archive + dead, written to a file scrapes do not read (not ``*.db``), renamed over the
    archive, then the dead file removed: a scrape sees the archive before or after, never half
    written (only between the rename and the removal, a few microseconds, could one scrape count
    the dead process twice)."""
    folding = archive.removesuffix(".db") + ".folding"
    if os.path.exists(archive):
        shutil.copyfile(archive, folding)
    elif os.path.exists(folding):
        os.remove(folding)
    target = MmapedDict(folding)
    try:
        values: Iterable[tuple[str, float, float, int]] = MmapedDict.read_all_values_from_file(dead)
        for key, value, timestamp, _ in values:
            current, _ = target.read_value(key)
            target.write_value(key, current + value, timestamp)
    finally:
        target.close()
    os.replace(folding, archive)
    os.remove(dead)
