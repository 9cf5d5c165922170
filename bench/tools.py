"""Processes and measurements for the benchmarks: servers, wrk, timers, peak memory, CPU time."""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from devstack.net import free_port, wait_http  # noqa: F401 (the bench's tools)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def gunicorn(app_path: str, env: dict, port: int, wait: bool = True):
    """gunicorn with the production config (gunicorn.conf.py), on 127.0.0.1 only; ``wait``: until it
    answers (else call wait_http yourself)."""
    full_env = {**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_ACCESSLOG": ""}
    with open(ROOT / "bench" / "results" / f"gunicorn-{port}.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app_path],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if wait:
                wait_http(f"http://127.0.0.1:{port}/api/v1/users/1/segments")
            yield process
        finally:
            process.terminate()
            process.wait(30)


@contextmanager
def rq_worker(env: dict):
    """``flask worker`` (RQ, forking a work horse per job, as in production) until the block ends."""
    full_env = {**os.environ, **env, "FLASK_APP": "wsgi"}
    with open(ROOT / "bench" / "results" / "worker.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "flask"), "worker"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.terminate()  # warm shutdown: finishes the current job
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class PeakRss:
    """The largest peak RSS (VmHWM) of any process of a group while the block runs, sampled
    every ``interval`` seconds (a process that peaks less than ``interval`` before it exits
    may be missed)."""

    def __init__(self, lister: Callable[[], list[psutil.Process]], interval: float = 0.05) -> None:
        self.lister = lister
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        for process in self.lister():
            try:
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.mb = max(self.mb, int(line.split()[1]) / 1024)
            except OSError:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRss:
        for process in self.lister():
            with suppress(OSError):
                Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


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
    requests: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group, when measured
    wrk_cpu: float = 0.0  # CPU seconds of wrk itself
    machine: dict[str, float] = field(default_factory=dict)  # busy / others: CPU seconds, elapsed: seconds
    histogram: dict[int, int] = field(default_factory=dict)  # latency µs -> count (scripts that print it)

    def cpu_ms_per_request(self, *groups: str) -> float:
        return sum(self.cpu[g] for g in (groups or self.cpu)) * 1000 / max(self.requests, 1)


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


def wrk_threads(connections: int) -> int:
    """1 wrk thread per 25 connections, at most 2."""
    return max(1, min(2, connections // 25))


def wrk(
    url: str,
    connections: int,
    seconds: int,
    script: Path | None = None,
    args: Iterable[object] = (),
    meter: CpuMeter | None = None,
) -> Load:
    """wrk in its own process, latency percentiles; ``script`` (a wrk Lua script) gets ``args``.
    With ``meter`` the CPU time of its process groups is measured over the run."""
    command = [
        ensure_wrk(),
        "-t",
        str(wrk_threads(connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
    ]
    if script is not None:
        command += ["-s", str(script)]
    command += [url, *(["--", *map(str, args)] if script is not None else [])]
    if meter is not None:
        meter.start()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = meter.stop() if meter is not None else {}
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    machine = {}
    if meter is not None:
        machine = dict(meter.machine)
        machine["others"] = machine["busy"] - sum(cpu.values()) - wrk_cpu - machine["bench"]
    histogram = {}
    dump = re.search(r"^latency-histogram (.*)$", out, re.M)
    if dump and dump.group(1):
        histogram = {int(v): int(c) for v, c in (pair.split(":") for pair in dump.group(1).split(","))}
    return Load(
        rps,
        p50,
        p99,
        errors + (int(non2xx.group(1)) if non2xx else 0),
        requests,
        cpu,
        wrk_cpu,
        machine,
        histogram,
    )


def percentile_ms(histogram: dict[int, int], p: float) -> float:
    """The ``p``-th percentile (0..100) of a latency histogram (µs -> count), in ms."""
    total = sum(histogram.values())
    rank = max(1, math.ceil(total * p / 100))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value / 1000
    return 0.0


def combine(loads: list[Load]) -> Load:
    """Several runs as one: requests, CPU and machine time summed; rate = requests / time;
    p50 and p99 from the merged latency histograms (else the worst run's, an upper bound)."""
    seconds = sum(load.requests / load.rps for load in loads)
    requests = sum(load.requests for load in loads)

    def total(name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for load in loads:
            for key, value in getattr(load, name).items():
                out[key] = out.get(key, 0.0) + value
        return out

    histogram: dict[int, int] = {}
    for load in loads:
        for value, count in load.histogram.items():
            histogram[value] = histogram.get(value, 0) + count
    if all(load.histogram for load in loads):
        p50, p99 = percentile_ms(histogram, 50), percentile_ms(histogram, 99)
    else:
        p50, p99 = max(load.p50_ms for load in loads), max(load.p99_ms for load in loads)
    return Load(
        requests / seconds,
        p50,
        p99,
        sum(load.errors for load in loads),
        requests,
        total("cpu"),
        sum(load.wrk_cpu for load in loads),
        total("machine"),
        histogram,
    )


def permutation_step(count: int) -> int:
    """A step coprime with ``count`` near 0.618 * count: ``(k * step) % count`` walks every value
    of ``range(count)`` once, scattered (bench/rotating_users.lua)."""
    step = max(1, int(count * 0.6180339887))
    while math.gcd(step, count) != 1:
        step += 1
    return step


# -- CPU time -----------------------------------------------------------------------------------


class CpuMeter:
    """User + system CPU seconds of groups of processes over a measurement.

    ``groups`` maps a name to a function listing that group's processes now. A sampler thread
    lists them every ``interval`` seconds and keeps each process's latest reading, so a process
    that starts during the run counts from zero and one that exits counts up to its last sample
    (gunicorn replaces workers after ``max_requests``, and their database connections with them:
    at most ``interval`` of such a process's CPU is lost)."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self.machine: dict[str, float] = {}  # the whole machine over the same interval (see stop)
        self._first: dict[tuple[str, int, float], float] = {}
        self._last: dict[tuple[str, int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, initial: bool = False) -> None:
        for name, lister in self.groups.items():
            for process in lister():
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        key = (name, process.pid, process.create_time())
                except psutil.Error:
                    continue
                total = times.user + times.system
                if key not in self._first:
                    self._first[key] = total if initial else 0.0
                self._last[key] = total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._first.clear()
        self._last.clear()
        self._stop.clear()
        self._sample(initial=True)
        self._system = psutil.cpu_times()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        elapsed = time.perf_counter() - self._started
        system, own = psutil.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
        self._sample()
        busy = _busy(system) - _busy(self._system)
        bench = own.ru_utime + own.ru_stime - self._self.ru_utime - self._self.ru_stime
        self.machine = {"elapsed": elapsed, "busy": busy, "bench": bench}  # bench: this process (the sampler)
        totals = dict.fromkeys(self.groups, 0.0)
        for key, last in self._last.items():
            totals[key[0]] += last - self._first[key]
        return totals


def _busy(times) -> float:
    """CPU seconds the machine spent running something (guest time is inside user; steal is not ours)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def process_tree(pid: int) -> Callable[[], list[psutil.Process]]:
    """A process and all its descendants (gunicorn's master and workers)."""

    def listing() -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return listing


def postgres_backends(postmaster: int, database: str) -> Callable[[], list[psutil.Process]]:
    """The server processes connected to ``database`` (their title: ``postgres: <user> <db> <client> ...``)."""
    known: dict[tuple[int, float], bool] = {}

    def listing() -> list[psutil.Process]:
        found = []
        try:
            children = psutil.Process(postmaster).children()
        except psutil.Error:
            return []
        for child in children:
            key = (child.pid, child.create_time())
            if key not in known:
                try:
                    title = " ".join(child.cmdline())
                except psutil.Error:
                    continue
                known[key] = f" {database} " in f"{title} "
            if known[key]:
                found.append(child)
        return found

    return listing


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def machine_speed(rounds: int = 5) -> float:
    """Seconds for a fixed pure-Python loop (best of ``rounds``): this VM's speed drifts by tens of
    percent from hour to hour, so a run prints it at its start and end to compare runs by."""
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best


PEAK = "\nimport sys\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)"


def run_child(code: str, env: dict) -> tuple[float, float, str]:
    """Run Python code in a child process: (seconds, peak RSS MB of that child, stdout).

    The peak is the child's own VmHWM (ru_maxrss would include the parent's size at fork)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code + PEAK],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 1024, done.stdout
