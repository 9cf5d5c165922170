"""Production gunicorn settings (docker-compose web service and the benchmarks)."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", 1))
worker_class = "sync" if threads == 1 else "gthread"
keepalive = 5
timeout = 60
graceful_timeout = 30
# Recycling is a safety net against slow leaks, and a costly one: a new worker imports the app
# (about 1 s of CPU here). Workers share requests evenly, so with a narrow jitter they all reached
# their limit together (all 5 within a second, every 100,000 requests: a stall of the hot path).
# Each worker's limit is drawn from 100,000-200,000 instead: restarts are rare and spread out.
max_requests = 100_000
max_requests_jitter = 100_000
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
# gunicorn's own log (the app logs each request itself). `make run` sets warning: gunicorn's six
# start-up lines and one per worker booted give way to when_ready's one line.
loglevel = os.environ.get("GUNICORN_LOGLEVEL") or "info"
preload_app = False

# Prometheus multiprocess mode (/metrics sums every worker): each worker writes its metric values
# to files in PROMETHEUS_MULTIPROC_DIR. Set before any worker imports prometheus_client; without
# one configured, a fresh directory of this master's own (removed when it exits).
metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or ""
if not metrics_dir:
    import tempfile

    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="segments-metrics-")
    os.environ["SEGMENTS_METRICS_DIR_TEMPORARY"] = metrics_dir


def on_starting(server):
    """Start from empty: files left by an earlier run would be summed in (and pids get reused).
    One directory per gunicorn master."""
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))


def when_ready(server):
    """With gunicorn's info lines off, one line says the master listens, where and with what."""
    if loglevel.lower() not in {"debug", "info"}:
        import gunicorn

        addresses = ", ".join(str(listener) for listener in server.LISTENERS)
        print(
            f"gunicorn {gunicorn.__version__} listening at {addresses}, "
            f"{server.num_workers} {worker_class} workers (pid {os.getpid()})",
            flush=True,
        )


def child_exit(server, worker):
    """A worker exited (recycled after max_requests, or died): fold its counts into the archive files."""
    from webapp.telemetry.metrics import retire_process

    retire_process(worker.pid, metrics_dir)


def on_exit(server):
    if os.environ.get("SEGMENTS_METRICS_DIR_TEMPORARY") == metrics_dir:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
