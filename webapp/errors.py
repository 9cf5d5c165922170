"""Domain exceptions and the one place that turns any error into a response.

API requests get ``{"error": {"code", "message", "details"}}``; dashboard requests get
an error page, or for htmx requests a small fragment that htmx swaps in.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flask import request

Detail = dict[str, Any]  # one entry of an error's ``details``: field, message, code, parameters


class AppError(Exception):
    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}

    def __init__(
        self, message: str, details: list | None = None, *, code: str | None = None, status: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code:
            self.code = code
        if status:
            self.status = status


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class DatabaseBusy(AppError):
    """PostgreSQL broke a deadlock (or a serialization conflict) on every attempt: everything
    was rolled back, the request is safe to repeat."""

    status = 503
    code = "database_busy"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("The database is busy with conflicting changes; nothing was changed. Try again.")


class DatabaseUnavailable(AppError):
    """The database connection was lost (or could not be had) before anything was committed:
    nothing happened, the request is safe to repeat."""

    status = 503
    code = "database_unavailable"
    headers = {"Retry-After": "2"}

    def __init__(self) -> None:
        super().__init__(
            "The database is unavailable for a moment; nothing was changed. Try again in a few seconds."
        )


class ReplicasBehind(AppError):
    """A read whose replicas were behind (its token not replayed, or past the lag bound) found
    the process's quota of reads falling back to the primary in use: nothing read, safe to
    repeat (docs/design.md, Reads on replicas)."""

    status = 503
    code = "replicas_behind"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("The database replicas are behind for a moment. Try again in a second.")


class OutcomeUnknown(AppError):
    """The connection was lost while the transaction was committing: the change may or may not
    have been made (docs/design.md, Transactions)."""

    status = 500
    code = "outcome_unknown"

    def __init__(self) -> None:
        super().__init__(
            "The connection to the database was lost while this change was being committed: it may "
            "or may not have been made. Read it back, or retry with an Idempotency-Key "
            "(the retry runs again and its answer shows what the first attempt left)."
            if is_api_request()
            else "The connection to the database was lost while saving: the change may or may not have "
            "been made. Reload the page to see whether it was before doing it again."
        )


class Problem(NamedTuple):
    """What a check found: its stable ``code`` and the API's English ``message``."""

    code: str
    message: str


def detail(field: str, message: str, *, code: str, **params: object) -> Detail:
    """One entry of an error's ``details`` list: the ``field`` it is about, the API's English
    ``message``, a stable ``code`` naming the kind of problem (snake_case: ``unknown_segment``,
    ``group_full``, ...) and the parameters that describe this one (``slug=``, ``max_percent=``).
    Messages may be reworded; a code and its parameters are a contract: the dashboard words a
    problem from them (web.messages.WORDING), never from the message."""
    return {"field": field, "message": message, "code": code, **params}


def is_api_request() -> bool:
    return request.path.startswith("/api/") or (request.blueprint or "").startswith("api")


OFREP_PREFIX = "/ofrep/"  # OpenFeature's remote evaluation protocol (webapp/api/ofrep.py)


def is_ofrep_request() -> bool:
    """A request to OFREP's routes: its errors speak the protocol's format, not our envelope
    (the one documented exception, docs/api.md)."""
    return request.path.startswith(OFREP_PREFIX)


def ofrep_failure(error_code: str, details: str, key: str | None = None) -> dict[str, str]:
    """An error in OFREP's format (its OpenAPI's evaluationFailure, flagNotFound,
    bulkEvaluationFailure and generalErrorResponse in one shape): the flag's ``key`` when one
    was asked, an OpenFeature ``errorCode`` (FLAG_NOT_FOUND, PARSE_ERROR, TARGETING_KEY_MISSING,
    INVALID_CONTEXT or GENERAL) and ``errorDetails`` in words."""
    return {**({"key": key} if key is not None else {}), "errorCode": error_code, "errorDetails": details}
