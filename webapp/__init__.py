"""Segments: dynamic user segmentation for product experiments."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from webapp.config import ROOT, Config

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
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://" + uri.removeprefix("postgresql://")


def register_extensions(app: Flask) -> None:
    from webapp import models  # noqa: F401  (tables on the metadata for migrations)
    from webapp.extensions import db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        _sqlite_pragmas(app)


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


def register_blueprints(app: Flask) -> None:
    from webapp.api import bp as api_bp
    from webapp.web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(web_bp)


def register_errors(app: Flask) -> None:
    from webapp.errors import register_error_handlers

    register_error_handlers(app)


def register_cli(app: Flask) -> None:
    from webapp.cli import register

    register(app)
