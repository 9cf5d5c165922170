"""The request boundary: commit or roll back once, then run after-commit side effects.

Services never commit. Views are wrapped in :func:`transactional`; side effects that must
only happen for committed data (enqueueing jobs) go through
:func:`after_commit`.

A connection lost before the commit was sent is ``database_unavailable`` (503, nothing
happened); one lost while committing is :class:`OutcomeUnknown`. Rolling back never raises
(:func:`rollback_quietly`), in a view, an error handler or the request's teardown.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, make_response
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from webapp.errors import DatabaseBusy, OutcomeUnknown
from webapp.platform.extensions import db
from webapp.rules import CONSISTENCY_HEADER

log = logging.getLogger(__name__)
_KEY = "after_commit"
ATTEMPTS = 3
_RETRIED = ("40P01", "40001")  # deadlock detected, serialization failure: nothing was written


def after_commit(callback: Callable[[], object], session: Session | None = None) -> None:
    """Run ``callback`` once the current transaction commits; drop it on rollback."""
    session = session or db.session()
    session.info.setdefault(_KEY, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_KEY, []):
        try:
            callback()
        except Exception:  # a side effect must not turn a committed write into an error
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous_transaction: object) -> None:
    if previous_transaction.parent is None:  # type: ignore[attr-defined]
        session.info.pop(_KEY, None)


# SQLSTATEs of a connection that is gone or refused: class 08 (connection exception), and the
# server shutting the session down (57P01 admin shutdown: pg_terminate_backend, 57P02 crash,
# 57P03 cannot connect now: starting up or in recovery).
_GONE = ("57P01", "57P02", "57P03")


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection was lost or could not be had (as opposed to
    a statement that failed on a live connection)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no connection free in the pool in time
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if state is None:  # a driver-side OperationalError: connecting failed, the socket closed
        return isinstance(exc, sa_exc.OperationalError)
    return state.startswith("08") or state in _GONE


def rollback_quietly(session: Session | None = None) -> None:
    """Roll back, never raising: a rollback on a connection the server dropped fails, and it
    runs where nothing may fail (an error handler, the request's teardown). Its connections are
    then invalidated (closed, never returned to the pool as they are)."""
    session = session or db.session()
    _or_discard(session, "rollback", session.rollback)


def _or_discard(session: Session, what: str, action: Callable[[], object]) -> None:
    """Run ``action`` on the session; if it fails, log it and invalidate the session's
    connections (closed, never returned to the pool as they are). Never raises."""
    try:
        action()
    except Exception:
        log.warning("%s failed; the session's connections are discarded", what, exc_info=True)
        try:
            session.invalidate()
        except Exception:
            log.warning("invalidating the session failed", exc_info=True)


def init_app(app: Flask) -> None:
    """End each request's session without raising (after ``db.init_app``: teardowns run in
    reverse, so this one runs before Flask-SQLAlchemy's, which then finds nothing to close).

    Flask-SQLAlchemy's own teardown closes the session, whose rollback raises when the server
    dropped the connection after the request's last statement; raised in a teardown, that
    escapes Flask and the WSGI server answers its bare error page."""

    @app.teardown_appcontext
    def _end_session(error: BaseException | None) -> None:
        registry = db.session.registry
        if not registry.has():
            return
        session = registry()
        try:
            _or_discard(session, "closing the request's session", session.close)
        finally:
            registry.clear()


def abandon() -> None:
    """Roll back now: a view caught a domain error and answers it itself (a form shown
    again with its errors, whatever its status code), so nothing of the attempt may commit."""
    db.session.rollback()


def transactional(view: Callable) -> Callable:
    """Commit when the view returns a non-error response, roll back otherwise.

    Pending changes are flushed first: a failure there (a lost connection included) leaves
    nothing committed. A connection lost during the commit itself is :class:`OutcomeUnknown`:
    the COMMIT may have reached the server. A deadlock or serialization failure PostgreSQL
    detected rolled everything back: the view runs again (ATTEMPTS in all, with a short jittered
    pause), then answers 503 ``database_busy`` (safe to repeat)."""

    @functools.wraps(view)
    def wrapper(*args: object, **kwargs: object) -> Response:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response: Response = make_response(view(*args, **kwargs))
                if response.status_code < 400:
                    db.session.flush()
                break
            except sa_exc.DBAPIError as exc:
                rollback_quietly()
                if getattr(exc.orig, "sqlstate", None) not in _RETRIED:
                    raise
                if attempt == ATTEMPTS:
                    raise DatabaseBusy() from exc
                log.info("transaction retried after %s (attempt %d)", exc.orig.__class__.__name__, attempt)
                time.sleep(random.uniform(0.005, 0.03) * attempt)
            except BaseException:
                rollback_quietly()
                raise
        if response.status_code >= 400:
            rollback_quietly()
            return response
        try:
            db.session.commit()
        except Exception as exc:
            rollback_quietly()
            if database_unreachable(exc):
                raise OutcomeUnknown() from exc
            raise
        add_consistency_token(response)
        return response

    return wrapper


def add_consistency_token(response: Response) -> None:
    """The ``Segments-Consistency`` header of a committed write: the primary's WAL position now
    (``Reader.token``, on the request's session: a connection of the pool the write used),
    past the commit. A read that sends it back is served by a replica only once the replica has
    replayed it (webapp/services/reads/replicas.py). Reading it cannot undo the write: if it fails,
    the answer goes without it (a read without a token: exact mode reads the primary)."""
    try:
        response.headers[CONSISTENCY_HEADER] = current_app.extensions["reader"].token(db.session)
    except Exception:
        log.warning("the write committed; reading its consistency token failed", exc_info=True)
        rollback_quietly()
