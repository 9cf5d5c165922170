"""The request boundary: commit or roll back once, then run after-commit side effects.

Services never commit. Views are wrapped in :func:`transactional`; side effects that must
only happen for committed data (enqueueing jobs) go through
:func:`after_commit`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from flask import Response, make_response
from sqlalchemy import event
from sqlalchemy.orm import Session

from webapp.extensions import db

log = logging.getLogger(__name__)
_KEY = "after_commit"


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


def abandon() -> None:
    """Roll back now: a view caught a domain error and answers it itself (a form shown
    again with its errors, whatever its status code), so nothing of the attempt may commit."""
    db.session.rollback()


def transactional(view: Callable) -> Callable:
    """Commit when the view returns a non-error response, roll back otherwise."""

    @functools.wraps(view)
    def wrapper(*args: object, **kwargs: object) -> Response:
        try:
            response: Response = make_response(view(*args, **kwargs))
        except BaseException:
            db.session.rollback()
            raise
        if response.status_code < 400:
            db.session.commit()
        else:
            db.session.rollback()
        return response

    return wrapper
