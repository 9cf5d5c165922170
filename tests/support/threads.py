"""Real threads for concurrency tests: run a function in several at once, surface what they raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_threads(count: int, work: Callable[[int], object], timeout: float = 120) -> None:
    """``work(0)`` … ``work(count - 1)``, each in a thread of its own, started together and
    joined (up to ``timeout`` seconds each); anything one of them raised fails the test."""
    crashes: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # surfaced below
            crashes.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread still runs after {timeout} s"
    assert not crashes, crashes
