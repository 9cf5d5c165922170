"""``python -m devstack`` (``make run``): the whole stack on one machine with only Python.

Without ``DATABASE_URL`` it runs an embedded PostgreSQL in ``$SEGMENTS_INSTANCE/postgres``, without
``REDIS_URL`` an embedded Redis in ``$SEGMENTS_INSTANCE/redis`` (``SEGMENTS_INSTANCE`` defaults to
``<repo>/instance``; the data stays for the next run). It then runs the migrations and starts gunicorn,
``flask worker`` and ``flask scheduler``, each in its own process group, their output in this
terminal prefixed with their name. Ctrl-C / SIGTERM, or any of them dying, stops the children,
then Redis, then PostgreSQL.

Environment: ``HOST`` (127.0.0.1), ``PORT`` (8000), ``GUNICORN_WORKERS`` (2), ``REPORTS_DIR``
(``$SEGMENTS_INSTANCE/reports``), ``PROMETHEUS_MULTIPROC_DIR`` (``$SEGMENTS_INSTANCE/metrics``, for
gunicorn only), and whatever else the app reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import psutil

from devstack import embedded
from devstack.embedded import EmbeddedPostgres, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT = 60.0  # seconds until /healthz must answer
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL for the children
_out_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class Stop(Exception):
    """Leave the main loop: a signal (exit 0) or a failure (exit 1)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def say(message: str, name: str = "devstack") -> None:
    _write(f"{name:<9} | {message}\n".encode())


def _write(data: bytes) -> None:
    with _out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


class _Held:
    """The children's lines until the banner is out (the banner first, then each process's start
    line); released at once when the start fails, before the reason is said."""

    lines: list[bytes] | None = []


def _child_line(data: bytes) -> None:
    with _out_lock:
        if _Held.lines is not None:
            _Held.lines.append(data)
            return
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def release_output() -> None:
    """From now on the children's lines go straight out; what was held first."""
    with _out_lock:
        held, _Held.lines = _Held.lines or [], None
        sys.stdout.buffer.write(b"".join(held))
        sys.stdout.flush()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: devstack killed -9 -> the child gets SIGTERM


@dataclass
class Child:
    """A child process in its own process group, its output pumped to our stdout."""

    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread | None = None

    @classmethod
    def spawn(cls, name: str, argv: list[str], env: dict[str, str]) -> Child:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return cls(name, process)

    def start_pump(self) -> None:
        """Copy the output, line by line with our prefix (started after the forks: no threads then)."""
        assert self.process.stdout is not None
        self.pump = threading.Thread(target=_pump, args=(self.name, self.process.stdout), daemon=True)
        self.pump.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member changed its uid; it exists
            return True
        return any(p.status() != psutil.STATUS_ZOMBIE for p in _group_members(self.pid))

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def _pump(name: str, stream: IO[bytes]) -> None:
    prefix = f"{name:<9} | ".encode()
    for line in iter(stream.readline, b""):
        _child_line(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
    stream.close()


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if os.getpgid(process.pid) == pgid:
                members.append(process)
    return members


@dataclass
class DevStack:
    instance: Path
    host: str
    port: str
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    owns_postgres: bool = False
    owns_redis: bool = False
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the children's environment
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in {"0.0.0.0", "", "::", "[::]"} else self.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        database_url = os.environ.get("DATABASE_URL") or self._start_postgres()
        redis_url = os.environ.get("REDIS_URL") or self._start_redis()
        env = self.env = self._child_env(database_url, redis_url)
        self._migrate(env)
        self._start_children(env)
        self._wait_until_healthy()
        self._print_table(database_url, redis_url)
        release_output()
        while True:
            self._check_children()
            time.sleep(0.25)

    def _start_postgres(self) -> str:
        self.owns_postgres = True
        say(f"starting PostgreSQL in {self.instance / 'postgres'}")
        started = time.monotonic()
        with _uninterrupted():
            self.postgres = embedded.start_postgres(self.instance / "postgres")
            self.postgres.create_database("segments")
        self.timings["PostgreSQL"] = time.monotonic() - started
        return self.postgres.url("segments")

    def _start_redis(self) -> str:
        self.owns_redis = True
        started = time.monotonic()
        with _uninterrupted():
            self.redis = embedded.start_redis(self.instance / "redis")
        self.timings["Redis"] = time.monotonic() - started
        return self.redis.url

    def _child_env(self, database_url: str, redis_url: str) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            FLASK_APP="wsgi",
            PYTHONUNBUFFERED="1",
            GUNICORN_BIND=f"{host}:{self.port}",
        )
        env.setdefault("GUNICORN_WORKERS", "2")
        env.setdefault("REPORTS_DIR", str(self.instance / "reports"))
        env.setdefault("SEGMENTS_INSTANCE", str(self.instance))
        if not env.get("SECRET_KEY"):  # with DATABASE_URL set the app insists on a real key
            env["SECRET_KEY"] = _local_secret_key(self.instance / "secret_key")
        if not env.get("TRUSTED_HOSTS"):  # with DATABASE_URL set the app insists on its host names
            names = ["localhost", "127.0.0.1"]
            if self.host not in {"0.0.0.0", "", "::", "[::]", *names}:
                names.append(self.host)
            env["TRUSTED_HOSTS"] = ",".join(names)
        if self.owns_postgres:  # the local embedded stack: the dashboard is open (the page says so)
            env.setdefault("DASHBOARD_OPEN", "true")
        return env

    def _migrate(self, env: dict[str, str]) -> None:
        started = time.monotonic()
        with _uninterrupted():
            child = Child.spawn("migrate", [sys.executable, "-m", "flask", "db", "upgrade"], env)
            self.children.append(child)
        child.start_pump()
        code = child.process.wait()
        if child.pump is not None:
            child.pump.join(5)
        self.children.remove(child)
        if code != 0:
            raise Stop(f"migrations failed (flask db upgrade exited with {code})", 1)
        self.timings["migrations"] = time.monotonic() - started

    def _start_children(self, env: dict[str, str]) -> None:
        self.timings["app"] = time.monotonic()
        commands = {
            "web": [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            "worker": [sys.executable, "-m", "flask", "worker"],
            "scheduler": [sys.executable, "-m", "flask", "scheduler"],
        }
        # /metrics sums gunicorn's workers through files here (prometheus-client multiprocess mode;
        # gunicorn.conf.py empties it at start); the worker and scheduler write none.
        own_env = {
            "web": {
                "PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR")
                or str(self.instance / "metrics"),
                # gunicorn's start-up lines give way to one (gunicorn.conf.py, when_ready)
                "GUNICORN_LOGLEVEL": env.get("GUNICORN_LOGLEVEL") or "warning",
            }
        }
        with _uninterrupted():
            for name, argv in commands.items():
                self.children.append(Child.spawn(name, argv, {**env, **own_env.get(name, {})}))
        for child in self.children:
            child.start_pump()

    def _check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise Stop(f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}", 1)

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            self._check_children()
            # (a request gunicorn queues while its workers boot waits, rather than piling up retries)
            if _answers(f"{self.base_url}/healthz", timeout=max(1.0, min(5.0, deadline - time.monotonic()))):
                self.timings["app"] = time.monotonic() - self.timings["app"]
                return
            if time.monotonic() > deadline:
                raise Stop(f"{self.base_url}/healthz did not answer within {HEALTH_TIMEOUT:.0f} s", 1)
            time.sleep(0.1)

    def _print_table(self, database_url: str, redis_url: str) -> None:
        total = _process_age()
        kind = "cold" if self.postgres is not None and self.postgres.initialized else "warm"
        steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.items())
        web = self.children[0]
        workers = os.environ.get("GUNICORN_WORKERS", "2")
        env = self.env
        rows = [
            ("dashboard", f"{self.base_url}/  ({_dashboard_access(env)})"),
            ("API", f"{self.base_url}/api/v1  ({_api_access(env.get('API_TOKENS', ''))})"),
            ("API docs", f"{self.base_url}/api/docs"),
            (
                "metrics",
                f"{self.base_url}/metrics  "
                + ("(needs METRICS_TOKEN)" if env.get("METRICS_TOKEN") else "(open: METRICS_TOKEN is empty)"),
            ),
            (
                "database",
                _redact(database_url)
                + (
                    f"  (embedded PostgreSQL, pid {self.postgres.pid}{_attached(self.postgres.started)}, "
                    f"data {self.postgres.data_dir})"
                    if self.postgres
                    else "  (external)"
                ),
            ),
            (
                "redis",
                _redact(redis_url)
                + (
                    f"  (embedded Redis, pid {self.redis.pid}{_attached(self.redis.started)}, "
                    f"data {self.redis.data_dir})"
                    if self.redis
                    else "  (external)"
                ),
            ),
            ("reports", f"{env['REPORTS_DIR']}  (the CSV files)"),
            (
                "processes",
                f"web pid {web.pid} (gunicorn, {workers} workers), "
                + ", ".join(f"{c.name} pid {c.pid}" for c in self.children[1:]),
            ),
            (
                "logs",
                "this terminal, each line prefixed with its process"
                + "".join(f"; {name}: {path}" for name, path in self._server_logs()),
            ),
        ]
        say(f"Segments is up: {kind} start, {total:.1f} s to /healthz ({steps})")
        for label, value in rows:
            say(f"  {label:<10} {value}")
        say("Ctrl-C stops everything. Each process's lines follow.")

    def _server_logs(self) -> list[tuple[str, Path]]:
        logs = [("PostgreSQL", self.postgres.data_dir / "log")] if self.postgres else []
        return logs + ([("Redis", self.redis.log)] if self.redis else [])

    def shutdown(self) -> bool:
        """SIGTERM every child's group, SIGKILL what is left after STOP_TIMEOUT; then Redis, PostgreSQL.
        False if a server would not stop."""
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))
            while child.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if child.process.poll() is None or child.group_alive():
                say(f"{child.name} did not stop within {STOP_TIMEOUT:.0f} s: SIGKILL")
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            if child.pump is not None:
                child.pump.join(2)
        if self.children:
            say("stopped " + ", ".join(child.name for child in self.children))
        ok = True
        servers = [
            ("Redis", self.redis, self.owns_redis, embedded.stop_redis, "redis"),
            ("PostgreSQL", self.postgres, self.owns_postgres, embedded.stop_postgres, "postgres"),
        ]
        for name, server, owned, stop_by_dir, subdir in servers:
            try:
                if server is not None:
                    server.stop()
                    say(f"stopped {name}")
                elif owned and stop_by_dir(self.instance / subdir):  # it failed while starting
                    say(f"stopped {name}")
            except Exception as exc:  # still try the next one
                say(f"could not stop {name}: {exc}")
                ok = False
        return ok


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}  # (as webapp/config.py reads it)


def _dashboard_access(env: dict[str, str]) -> str:
    if _truthy(env.get("DASHBOARD_OPEN")):
        return "open: DASHBOARD_OPEN is set, no SSO proxy needed"
    header = env.get("DASHBOARD_USER_HEADER") or "X-Forwarded-Email"
    return f"needs the SSO proxy's {header} header"


def _api_access(raw: str) -> str:
    """Whether API_TOKENS locks the API (the app refused to start had an entry been malformed)."""
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if not entries:
        return "open: API_TOKENS is empty, calls need no token"
    scopes = []
    for entry in entries:
        name, _, rest = entry.partition(":")
        scope = rest.rpartition(":")[2] if ":" in rest else "write"
        scopes.append(f"{name.strip()}: {scope.strip()}")
    plural = "s" if len(entries) > 1 else ""
    return f"locked by API_TOKENS, {len(entries)} token{plural} ({', '.join(scopes)}): calls need Authorization: Bearer <token>"


def _attached(started: bool) -> str:
    return "" if started else ", was already running"


def _process_age() -> float:
    """Seconds since this process started (interpreter start-up included)."""
    try:  # both on the boot clock: immune to wall-clock steps, unlike psutil's create_time()
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - psutil.Process().create_time()


def _local_secret_key(path: Path) -> str:
    """A random key generated once and kept in ``path`` (0600): the local stack's SECRET_KEY."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _Signals:
    deferred = False
    pending: int | None = None


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    if _Signals.deferred:
        _Signals.pending = signum
        return
    _ignore_signals()
    raise Stop(f"received {signal.Signals(signum).name}, stopping", 0)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done: a server interrupted while it starts, or a
    child spawned but not yet recorded, would be left running."""
    _Signals.deferred = True
    try:
        yield
    finally:
        _Signals.deferred = False
    if _Signals.pending is not None:
        _raise_stop(_Signals.pending, None)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def local_stack() -> DevStack:
    """The stack of ``$SEGMENTS_INSTANCE`` (default ``<repo>/instance``), on ``HOST``:``PORT``."""
    instance = Path(os.environ.get("SEGMENTS_INSTANCE") or ROOT / "instance").expanduser().resolve()
    return DevStack(instance, os.environ.get("HOST") or "127.0.0.1", os.environ.get("PORT") or "8000")


def main() -> int:
    """Run the stack until a signal or a child's death; the exit status is 0 only for a signal."""
    stack = local_stack()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    code = 1
    try:
        stack.run()
    except Stop as stop:
        release_output()  # (a child's last words before the reason, when the start failed)
        say(str(stop))
        code = stop.code
    except Exception:
        release_output()
        say("failed:\n" + traceback.format_exc().rstrip())
    finally:
        _ignore_signals()  # the shutdown is bounded; it must not be cut short
        release_output()
        if not stack.shutdown():
            code = 1
    return code


def exec_command(argv: list[str]) -> int:
    """``python -m devstack exec COMMAND [ARG...]`` (make migrate, make worker, make scheduler):
    COMMAND against the local stack's servers. Without ``DATABASE_URL`` it starts the embedded
    PostgreSQL under ``$SEGMENTS_INSTANCE/postgres``, or attaches to the one running there (make
    run's), and creates its ``segments`` database; without ``REDIS_URL`` the same for Redis. The
    servers keep running afterwards. Then this process becomes COMMAND, in the environment make
    run gives its processes (the URLs, the local SECRET_KEY and TRUSTED_HOSTS, and the open
    dashboard when the database is the embedded one). Returns only on a usage error."""
    if not argv:
        say("usage: python -m devstack exec COMMAND [ARG...]")
        return 2
    stack = local_stack()
    database_url = os.environ.get("DATABASE_URL") or stack._start_postgres()
    redis_url = os.environ.get("REDIS_URL") or stack._start_redis()
    env = stack._child_env(database_url, redis_url)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)  # (never returns: raises OSError if COMMAND cannot run)
