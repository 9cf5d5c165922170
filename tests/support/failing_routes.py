"""Test-only routes that fail inside a request the way production requests do: a SQL error that
aborts the transaction, the request's own database backend terminated (``pg_terminate_backend``)
mid-request or while it commits. Each exists on the dashboard (``/_fail/...``) and under the API
(``/api/v1/_fail/...``), as a read (no ``@transactional``, as the dashboard's pages) or a write.

``register(app)`` adds them to an app before its first request; ``tests/support/failing_wsgi.py``
is the production app with them, for gunicorn.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from sqlalchemy import event, text

from webapp.http.transaction import transactional
from webapp.platform.extensions import csrf, db


def terminate_own_backend() -> int:
    """Terminate the backend of the request's session connection from a second connection and
    wait until it is gone; returns its pid."""
    pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = current_app.extensions.setdefault(
        "failing_routes_killer",
        sa.create_engine(current_app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool),
    )
    with killer.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()
    return pid


def _sql_error():
    db.session.execute(text("SELECT 1"))
    db.session.execute(text("SELECT 'not a number'::int"))  # invalid_text_representation (22P02)
    return {"unreachable": True}


def _killed_mid_request():
    terminate_own_backend()
    db.session.execute(text("SELECT 1"))  # the next statement finds the connection gone
    return {"unreachable": True}


def _killed_after_the_last_statement():
    terminate_own_backend()  # the view has read what it needed: only the teardown's rollback is left
    return {"read": True}


def _killed_at_commit():
    db.session.execute(text("SELECT 1"))  # a transaction is open on the request's connection
    event.listen(db.session(), "before_commit", lambda session: terminate_own_backend(), once=True)
    return {"committed": "maybe"}  # the commit after the view fails: its outcome is unknown


def _backend_pid():
    return {"pid": db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()}


# path -> (view, wrapped in @transactional): reads are not (as the dashboard's pages), writes are.
ROUTES = {
    "pid": (_backend_pid, True),
    "sql-error": (_sql_error, False),
    "sql-error-in-write": (_sql_error, True),
    "killed": (_killed_mid_request, False),
    "killed-in-write": (_killed_mid_request, True),
    "killed-at-commit": (_killed_at_commit, True),
    "killed-after-read": (_killed_after_the_last_statement, False),
}


def register(app: Flask) -> Flask:
    for prefix, name in (("/_fail", "fail_web"), ("/api/v1/_fail", "fail_api")):
        bp = Blueprint(name, __name__, url_prefix=prefix)
        for path, (view, wrapped) in ROUTES.items():
            endpoint = path.replace("-", "_")
            bp.add_url_rule(
                f"/{path}", endpoint, transactional(view) if wrapped else view, methods=["GET", "POST"]
            )
        csrf.exempt(bp)
        app.register_blueprint(bp)
    return app
