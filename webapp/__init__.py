"""Segments: dynamic user segmentation for product experiments."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy import Engine, create_engine

from webapp.config import INSTANCE, ROOT, Config
from webapp.platform.redis_client import WEB_TIMEOUT

__all__ = ["create_app"]


def create_app(config: type | Mapping[str, Any] | None = None) -> Flask:
    """Build the app: config, extensions, blueprints, error handlers, CLI."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(INSTANCE),
    )
    configure(app, config)
    register_extensions(app)
    register_blueprints(app)
    register_errors(app)
    register_cli(app)
    return app


def configure(app: Flask, config: type | Mapping[str, Any] | None) -> None:
    """Settings; the app refuses to start without the servers it runs on (``DATABASE_URL``,
    ``REDIS_URL``): the local stack (``make run``, ``python -m devstack``) and the tests pass them."""
    from webapp.http.auth import parse_tokens

    app.config.from_object(Config)
    if isinstance(config, Mapping):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    configure_logging()
    require_servers(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri(app.config["DATABASE_URL"])
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
    options["connect_args"] = _connect_args(app)
    app.config["SECRET_KEY"] = secret_key(app)
    app.config["TRUSTED_HOSTS"] = trusted_hosts(app)
    app.extensions["api_tokens"] = parse_tokens(app.config["API_TOKENS"])
    redis_url = app.config["REDIS_URL"]
    timeouts = {"socket_timeout": WEB_TIMEOUT, "socket_connect_timeout": WEB_TIMEOUT}
    limits_url = (
        "redis+unix://" + redis_url.removeprefix("unix://") if redis_url.startswith("unix://") else redis_url
    )
    app.config.update(
        RATELIMIT_STORAGE_URI=limits_url,
        RATELIMIT_STORAGE_OPTIONS=timeouts,
    )


# Libraries whose INFO lines are chatter, not news: alembic logs each autogenerate plugin it sets
# up, in every process that imports it (web, worker, scheduler: about 30 lines at start); RQ's
# worker logs its start-up and four lines for every job it runs (the reaper and the rollouts job:
# every minute); rq-scheduler its "birth". Their warnings and errors still show; our jobs and
# processes log their own outcome at INFO (webapp.jobs). docs/operations.md, "Logs".
QUIET_LOGGERS = {
    "alembic.runtime.plugins": logging.WARNING,
    "rq.worker": logging.WARNING,
    "rq.scheduler": logging.WARNING,
    "rq_scheduler.scheduler": logging.WARNING,
}


def configure_logging() -> None:
    """INFO and up from our code on stderr, one format; the chatty libraries at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def _connect_args(app: Flask) -> dict[str, Any]:
    """Every connection works in UTC (day boundaries of charts and reports are UTC days)."""
    return {**app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args", {}), "options": "-c timezone=UTC"}


def database_uri(url: str) -> str:
    """SQLAlchemy URL for PostgreSQL through psycopg 3 (``postgresql://`` accepted too)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("postgresql+psycopg://"):
        raise RuntimeError("DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host/db)")
    return url


def require_servers(app: Flask) -> None:
    """Refuse to start without ``DATABASE_URL`` or ``REDIS_URL``: a deploy that lost a variable
    must fail, not run on a private database of its own."""
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not app.config.get(name)]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} must be set (e.g. DATABASE_URL=postgresql://user:pass@host/db, "
            "REDIS_URL=redis://host:6379/0). On a laptop, `make run` starts the whole stack on local "
            "servers, and `python -m devstack exec <command>` runs a command against them "
            "(make migrate, make worker and make scheduler do)"
        )


def secret_key(app: Flask) -> str:
    """The configured key; the app refuses to start without a strong one (the local stack
    generates one under instance/ and passes it)."""
    key: str = app.config["SECRET_KEY"] or ""
    if len(key) >= 32 or app.testing:
        return key
    raise RuntimeError(
        "SECRET_KEY must be set to a random string of at least 32 characters "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )


HOST_NAME = re.compile(r"\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def trusted_hosts(app: Flask) -> list[str]:
    """The configured host names (``TRUSTED_HOSTS``), checked. The app refuses to start without
    them, and with an entry that is not a host name (a typo never opens or closes the service);
    the local stack passes localhost and its HOST."""
    configured = app.config.get("TRUSTED_HOSTS") or []
    items = configured.replace(",", " ").split() if isinstance(configured, str) else list(configured)
    hosts = [item.strip().lower() for item in items if item.strip()]
    for position, host in enumerate(hosts, 1):
        if not HOST_NAME.fullmatch(host):
            raise RuntimeError(
                f"TRUSTED_HOSTS entry {position} ({host[:60]!r}) is not a host name: give names such as "
                "segments.example.com, or .example.com for its subdomains (no scheme, port or path)"
            )
    if hosts:
        return hosts
    raise RuntimeError(
        "TRUSTED_HOSTS must name the hosts clients reach this service by (e.g. "
        "TRUSTED_HOSTS=segments.example.com, comma-separated): absolute links (Location, status_url, "
        "link_to_file) are built only for them and any other Host header is refused"
    )


def register_extensions(app: Flask) -> None:
    from webapp import models  # noqa: F401  (models: tables on the metadata for migrations)
    from webapp.http import transaction
    from webapp.http.hot_path import HotPath, raise_standing_error
    from webapp.http.security import init_security, init_trusted_hosts
    from webapp.platform.extensions import csrf, db, limiter, migrate
    from webapp.services.reads.path import Reader
    from webapp.services.reads.replicas import Replicas, ReplicaSettings, replica_urls
    from webapp.telemetry.observability import init_request_logging

    app.wsgi_app = HotPath(app, app.wsgi_app)  # type: ignore[method-assign]  # (inside ProxyFix, if any)
    app.before_request(raise_standing_error)  # (a hot read's error the layer left: not read again)

    db.init_app(app)
    transaction.init_app(app)  # after db.init_app: its teardown runs first and never raises
    # The hot read path's own pool: driver-level reads, no pre-ping round trip (see read_path).
    # Autocommit from the connect on, so nothing is reset or rolled back on the way back to the pool.
    app.extensions["read_engine"] = read_engine(app, app.config["SQLALCHEMY_DATABASE_URI"])
    # The replicas' (DATABASE_REPLICA_URLS): the same, connecting within 2 s, and a pooled
    # connection to a host gone silent (power lost, a partition: no reset, packets dropped)
    # failing within seconds, not the kernel's minutes (REPLICA_SOCKET). One that cannot be
    # reached is skipped for a while (webapp/services/reads/replicas.py).
    settings = ReplicaSettings.of(app.config)  # (checked even without replicas: a typo fails now)
    engines = [
        read_engine(app, database_uri(url), **REPLICA_SOCKET)
        for url in replica_urls(app.config["DATABASE_REPLICA_URLS"])
    ]
    replicas = Replicas(app.extensions["read_engine"], engines, settings) if engines else None
    app.extensions["reader"] = Reader(app.extensions["read_engine"], replicas)  # every hot read's one way in
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    init_request_logging(
        app
    )  # first: its hook gives every request its id before another hook (the limiter's 429) can answer
    init_trusted_hosts(app)  # next: a Host the service does not own is refused before anything else runs
    app.after_request(_retry_after_only_when_limited)  # runs after the limiter's own hook
    limiter.init_app(app)
    csrf.init_app(app)
    init_security(app)


# libpq's settings for a replica's connections: connect within 2 s; an idle connection probed
# after 5 s (then every second), and unacknowledged data or probes give up after 3 s, so a read
# on a host gone silent fails (OperationalError: the replica skipped) in about 3 to 8 s.
REPLICA_SOCKET: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 3000,
}


def read_engine(app: Flask, url: str, **connect_args: Any) -> Engine:
    """An engine for hot reads on ``url`` (the primary or a replica): autocommit, no pre-ping."""
    return create_engine(
        url,
        pool_pre_ping=False,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        connect_args={**_connect_args(app), **connect_args},
    )


def _retry_after_only_when_limited(response: Response) -> Response:
    """Flask-Limiter sends Retry-After on every response; it means something only on a 429. An
    error that says when to come back (503 database_unavailable) keeps its own."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
        if own := g.get("retry_after"):
            response.headers["Retry-After"] = own
    return response


def register_blueprints(app: Flask) -> None:
    from webapp.api import bp as api_bp
    from webapp.api import idempotency, uploads
    from webapp.api.compat import bp as compat_bp
    from webapp.api.docs import bp as docs_bp
    from webapp.api.helpers import refuse_non_json_bodies
    from webapp.api.hot_routes import HOT_ROUTES
    from webapp.api.ofrep import ENDPOINTS as OFREP_ENDPOINTS
    from webapp.api.ofrep import bp as ofrep_bp
    from webapp.http import auth
    from webapp.platform.extensions import csrf, limiter
    from webapp.telemetry.observability import bp as ops_bp
    from webapp.web import bp as web_bp

    # "Which segments is user N in now?" (and OpenFeature's evaluations of it): never limited
    # unless RATELIMIT_HOT_PATH is set.
    hot = frozenset({*(route.endpoint for route in HOT_ROUTES), "api.lookup_segments", *OFREP_ENDPOINTS})

    def is_read() -> bool:
        """GET and HEAD, and the batch lookup (a read, whatever its method)."""
        return request.method in ("GET", "HEAD") or request.endpoint in hot

    def read_limit() -> str:
        config = current_app.config
        return str(config["RATELIMIT_HOT_PATH"] if request.endpoint in hot else config["RATELIMIT_READ"])

    reads = limiter.shared_limit(
        read_limit,
        scope=lambda endpoint: "api-hot" if endpoint in hot else "api-read",
        methods=["GET", "HEAD", "POST"],
        exempt_when=lambda: not is_read() or not read_limit(),
    )
    writes = limiter.shared_limit(
        lambda: current_app.config["RATELIMIT_WRITE"],
        scope="api-write",
        methods=["POST", "PUT", "PATCH", "DELETE"],
        exempt_when=lambda: is_read() or not current_app.config["RATELIMIT_WRITE"],
    )
    for blueprint in (api_bp, compat_bp):
        if not blueprint.before_request_funcs.get(None):
            blueprint.before_request(auth.identify_client)
            blueprint.before_request(refuse_non_json_bodies)
            blueprint.before_request(idempotency.before_request)
            blueprint.after_request(idempotency.after_request)
            blueprint.teardown_request(uploads.close_spool)
            reads(blueprint)
            writes(blueprint)
        csrf.exempt(blueprint)  # token/header based, not cookie based
        app.register_blueprint(blueprint)
    # OpenFeature's protocol: reads only (no JSON-body or idempotency rules: a body that is not
    # JSON is the protocol's PARSE_ERROR), the same tokens and hot-read limit.
    if not ofrep_bp.before_request_funcs.get(None):
        ofrep_bp.before_request(auth.identify_client)
        reads(ofrep_bp)
    csrf.exempt(ofrep_bp)
    app.register_blueprint(ofrep_bp)
    for blueprint in (docs_bp, ops_bp, web_bp):
        app.register_blueprint(blueprint)
    limiter.exempt(ops_bp)
    limiter.exempt(docs_bp)


def register_errors(app: Flask) -> None:
    from webapp.http.error_answers import register_error_handlers

    register_error_handlers(app)


def register_cli(app: Flask) -> None:
    from webapp.cli import register

    register(app)
