"""Segments: dynamic user segmentation for product experiments."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, current_app, request

from webapp.config import ROOT, Config
from webapp.redis_client import WEB_TIMEOUT

__all__ = ["create_app"]


def create_app(config: type | dict | None = None) -> Flask:
    """Build the app: config, extensions, blueprints, error handlers, CLI."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(ROOT / "instance"),
    )
    configure(app, config)
    register_extensions(app)
    register_blueprints(app)
    register_errors(app)
    register_cli(app)
    return app


def configure(app: Flask, config: type | dict | None) -> None:
    app.config.from_object(Config)
    if isinstance(config, dict):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    app.json.sort_keys = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("postgresql://"):
        app.config["SQLALCHEMY_DATABASE_URI"] = uri = "postgresql+psycopg://" + uri.removeprefix("postgresql://")
    if uri.startswith("postgresql"):  # day boundaries (charts, reports) are UTC days
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options["connect_args"] = {**options.get("connect_args", {}), "options": "-c timezone=UTC"}
    # Everything Redis-backed follows REDIS_URL; without it, in-process equivalents.
    redis_url = app.config["REDIS_URL"]
    timeouts = {"socket_timeout": WEB_TIMEOUT, "socket_connect_timeout": WEB_TIMEOUT}
    cache_type = "RedisCache" if redis_url else "SimpleCache"
    app.config["CACHE_TYPE"] = cache_type if app.config["CACHE_ENABLED"] else "NullCache"
    app.config["CACHE_REDIS_URL"] = redis_url
    app.config["CACHE_OPTIONS"] = timeouts if redis_url else {}
    app.config["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = timeouts if redis_url else {}


def register_extensions(app: Flask) -> None:
    from webapp import models  # noqa: F401  (tables on the metadata for migrations)
    from webapp.extensions import cache, csrf, db, limiter, migrate
    from webapp.observability import init_request_logging

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        _sqlite_pragmas(app)
    cache.init_app(app)
    app.after_request(_retry_after_only_when_limited)  # runs after the limiter's own hook
    limiter.init_app(app)
    csrf.init_app(app)
    init_request_logging(app)


def _retry_after_only_when_limited(response):
    """Flask-Limiter sends Retry-After on every response; it means something only on a 429."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def _sqlite_pragmas(app: Flask) -> None:
    from sqlalchemy import event

    from webapp.extensions import db

    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()


def _hot_path_exempt() -> bool:
    return current_app.config["RATELIMIT_EXEMPT_HOT_PATH"] and request.endpoint in {
        "api.user_segments", "api_compat.user_segments"}


def register_blueprints(app: Flask) -> None:
    from webapp.api import auth, idempotency
    from webapp.api import bp as api_bp
    from webapp.api.compat import bp as compat_bp
    from webapp.api.docs import bp as docs_bp
    from webapp.extensions import csrf, limiter
    from webapp.observability import bp as ops_bp
    from webapp.web import bp as web_bp

    reads = limiter.shared_limit(lambda: current_app.config["RATELIMIT_READ"], scope="api-read",
                                 methods=["GET", "HEAD"], exempt_when=_hot_path_exempt)
    writes = limiter.shared_limit(lambda: current_app.config["RATELIMIT_WRITE"], scope="api-write",
                                  methods=["POST", "PUT", "PATCH", "DELETE"])
    for blueprint in (api_bp, compat_bp):
        if not blueprint.before_request_funcs.get(None):
            blueprint.before_request(auth.identify_client)
            blueprint.before_request(idempotency.before_request)
            blueprint.after_request(idempotency.after_request)
            reads(blueprint)
            writes(blueprint)
        csrf.exempt(blueprint)  # token/header based, not cookie based
        app.register_blueprint(blueprint)
    for blueprint in (docs_bp, ops_bp, web_bp):
        app.register_blueprint(blueprint)
    limiter.exempt(ops_bp)
    limiter.exempt(docs_bp)


def register_errors(app: Flask) -> None:
    from webapp.errors import register_error_handlers

    register_error_handlers(app)


def register_cli(app: Flask) -> None:
    from webapp.cli import register

    register(app)
