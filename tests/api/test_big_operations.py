"""Big operations never stall the service: other clients' reads and writes (per-user changes to
the very segment being filled) all answer, without a server error, during a 1M-id bulk add and
the deletion of the resulting 1M-member segment, and their p99 stays within 10 times their p99
with no operation running, measured in the same test (a stall is a request waiting for a whole
operation: seconds). The absolute figure (p99 < 100 ms) is `make bench`'s (bulk, others' p99
during a bulk add): a shared 2-core test machine cannot hold it. Real gunicorn
(gunicorn.conf.py) and a real `flask worker`."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.support.live_stack import call, wait_finished

ROOT = Path(__file__).resolve().parents[2]
MILLION = 1_000_000
pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.long]


BASELINE_SECONDS = 3  # the same clients with no operation running first: the machine's own tail
MARGIN = 10


def test_others_are_not_stalled_during_a_1m_bulk_add_and_delete(stack):
    base = stack
    assert call(base, "POST", "/api/v1/segments", {"slug": "HUGE"})[0] == 201
    assert call(base, "POST", "/api/v1/segments", {"slug": "OTHER"})[0] == 201
    latencies: list[float] = []
    errors: list[int] = []
    stop = threading.Event()

    def other_client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            user = rng.randint(1, 2 * MILLION)
            for method, path, body in (
                ("POST", f"/api/v1/users/{user}/segments", {"add": ["HUGE", "OTHER"]}),
                ("GET", f"/api/v1/users/{user}/segments", None),
                ("POST", f"/api/v1/users/{user}/segments", {"del": ["HUGE"]}),
            ):
                started = time.perf_counter()
                status, _ = call(base, method, path, body, timeout=10)
                latencies.append(time.perf_counter() - started)
                if status >= 500:
                    errors.append(status)
            time.sleep(0.02)

    clients = [threading.Thread(target=other_client, args=(seed,)) for seed in range(3)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(BASELINE_SECONDS)
        status, operation = call(
            base, "POST", "/api/v1/segments/HUGE/members", {"user_ids": list(range(1, MILLION + 1))}
        )
        assert status == 202, operation
        during_add, started = len(latencies), time.perf_counter()
        wait_finished(base, operation["status_url"])
        added = time.perf_counter() - started
        status, deleted = call(base, "DELETE", "/api/v1/segments/HUGE")
        assert status == 200 and deleted["members_removed"] >= MILLION - 10_000, deleted
        wait_finished(base, deleted["operation_url"])
        print(
            f"1M bulk add {added:.1f} s, delete of its members {time.perf_counter() - started - added:.1f} s"
        )
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    idle, measured = sorted(latencies[:during_add]), sorted(latencies[during_add:])
    p99, bar = measured[int(len(measured) * 0.99)], idle[int(len(idle) * 0.99)]
    print(
        f"others during the 1M add and delete: {len(measured)} requests, "
        f"p50 {measured[len(measured) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"with no operation: {len(idle)} requests, p99 {bar * 1000:.1f} ms"
    )
    assert not errors and len(measured) > 200 and len(idle) > 20
    assert p99 < MARGIN * bar, (
        f"others' p99 {p99 * 1000:.0f} ms over {len(measured)} requests, {bar * 1000:.0f} ms with no operation"
    )
