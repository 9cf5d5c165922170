"""What metrics and read counting add to each hot-path request, in prometheus-client's
multiprocess mode (as under gunicorn): ``python -m bench.metrics_overhead``.

Two measurements of CPU time, each the best of several rounds (the least disturbed by the machine; the
rounds with and without alternate, so both see the same load):

- the two calls the hot path makes per request on their own: ``metrics.observe_request`` (a
  labelled histogram observation written to this process's mmap file) and
  ``read_counts.record`` (the segments of the answer counted in memory);
- the WSGI layer (``webapp.http.hot_path.HotPath``) answering a request end to end through the
  app's reader (``read_path.Reader.answer``), with the database read replaced by a fixed answer of
  three segments, with those two calls and with them
  replaced by no-ops: the difference is what they cost in place.

``--check`` runs fewer rounds (for tests/api/test_metrics.py). The last line is the figure the
README quotes: the added cost per hot-path request in microseconds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # before prometheus_client is imported
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="segments-bench-metrics-")


def best(call: Callable[[], object], number: int, rounds: int) -> float:
    """CPU microseconds of this process per call, best round (CPU time: other processes
    competing for the cores do not count)."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(number):
            call()
        times.append((time.process_time() - started) / number * 1e6)
    return min(times)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    number, rounds = (5_000, 9) if check else (50_000, 9)
    from webapp import create_app
    from webapp.http import hot_path
    from webapp.models.enums import Source
    from webapp.services.reads.catalog import ActiveSegment
    from webapp.services.reads.path import Reader
    from webapp.telemetry import metrics, read_counts

    # (the request log line costs the same either way: off the terminal)
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x" * 40,
            "TRUSTED_HOSTS": ["localhost"],
            "DATABASE_URL": "postgresql://bench@127.0.0.1:1/none",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "REQUEST_LOG": "off",
        }
    )
    read_counts.COUNTER.redis_url = None  # counts stay in memory: no Redis here
    answer = [ActiveSegment(f"BENCH_{i}", Source.ROLLOUT, None) for i in range(3)]

    class Stubbed(Reader):  # the app's reader (body, read counts) with no database behind it
        def segments(self, user_id: int, now: object = None, token: object = None) -> list[ActiveSegment]:
            return answer

    app.extensions["reader"] = Stubbed(app.extensions["read_engine"])
    layer = app.wsgi_app  # the host check in front of the hot path, as in production
    assert isinstance(getattr(layer, "app", None), hot_path.HotPath)
    environ = {
        "HTTP_HOST": "localhost",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/v1/users/12345/segments",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
    }

    def request() -> object:
        return layer(dict(environ), lambda status, headers: None)

    observe = best(lambda: metrics.observe_request("api.user_segments", 200, 0.0003), number, rounds)
    record_1 = best(lambda: read_counts.record(answer[:1]), number, rounds)
    record_3 = best(lambda: read_counts.record(answer), number, rounds)
    real = (hot_path.observe_request, read_counts.record)

    def stubbed() -> float:  # the same request with the two calls as no-ops
        hot_path.observe_request = lambda endpoint, status, seconds: None  # type: ignore[assignment]
        read_counts.record = lambda active: None  # type: ignore[assignment]
        try:
            return best(request, number, 1)
        finally:
            hot_path.observe_request, read_counts.record = real

    pairs = [(best(request, number, 1), stubbed()) for _ in range(rounds)]  # interleaved: same machine load
    with_metrics, without = min(p[0] for p in pairs), min(p[1] for p in pairs)
    print(f"metrics.observe_request (histogram, multiprocess): {observe:6.2f} µs")
    print(f"read_counts.record, 1 segment:                     {record_1:6.2f} µs")
    print(f"read_counts.record, 3 segments:                    {record_3:6.2f} µs")
    print(
        f"hot-path layer, 3 segments, with metrics:          {with_metrics:6.2f} µs (database read stubbed)"
    )
    print(f"hot-path layer, 3 segments, without:               {without:6.2f} µs")
    print(f"in place, measured as the difference:              {with_metrics - without:6.2f} µs")
    print(f"added per hot-path request: {observe + record_3:.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
