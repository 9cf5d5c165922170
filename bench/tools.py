"""Processes and measurements for the benchmarks: servers, wrk, timers, peak memory."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def gunicorn(app_path: str, env: dict, port: int):
    """gunicorn with the production config (gunicorn.conf.py), on 127.0.0.1 only."""
    full_env = {**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_ACCESSLOG": ""}
    with open(ROOT / "bench" / "results" / f"gunicorn-{port}.log", "w") as log:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app_path],
                                   cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/v1/users/1/segments")
            yield process
        finally:
            process.terminate()
            process.wait(30)


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry.name))
    return pids


def reset_peak_rss(pids: list[int]) -> None:
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM


def peak_rss_mb(pids: list[int]) -> float:
    peaks = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        return shutil.which("wrk")
    raise SystemExit("wrk (Debian package 'wrk') is needed for the read-path benchmark")


def wrk(url: str, connections: int, seconds: int) -> Load:
    """wrk in its own process: 1 thread per 25 connections (at most 2), latency percentiles."""
    threads = max(1, min(2, connections // 25))
    out = subprocess.run([ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(rps, p50, p99, errors + (int(non2xx.group(1)) if non2xx else 0))


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


PEAK = "\nimport sys\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)"


def run_child(code: str, env: dict) -> tuple[float, float, str]:
    """Run Python code in a child process: (seconds, peak RSS MB of that child, stdout).

    The peak is the child's own VmHWM (ru_maxrss would include the parent's size at fork)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + PEAK], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 1024, done.stdout
