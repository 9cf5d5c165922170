"""Checks shared by every service (ids, slugs, expiry) and the clocks (the process's and the
database's); limits live in rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import text
from sqlalchemy.orm import Session, scoped_session

from webapp.errors import Detail, Problem, ValidationFailed, detail
from webapp.rules import (
    MAX_DESCRIPTION,
    MAX_TTL_SECONDS,
    MAX_USER_ID,
    SLUG_HELP,
    bounded_int,
    in_utc,
    is_slug,
    problem_code,
)

DbSession: TypeAlias = Session | scoped_session[Any]  # what services take: a session, or Flask's db.session


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, the API's one timestamp format."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def user_id_problem(value: object) -> Problem | None:
    """Why ``value`` is not a user id, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return Problem("user_id_invalid", "user id must be an integer")
    if not 1 <= value <= MAX_USER_ID:
        return Problem("user_id_out_of_range", f"user id must be between 1 and {MAX_USER_ID:,}")
    return None


def check_user_id(value: object, field: str = "user_id") -> int:
    problem = user_id_problem(value)
    if problem:
        raise ValidationFailed(problem.message, [user_id_detail(field, problem, value)])
    assert isinstance(value, int)
    return value


def user_id_detail(field: str, problem: Problem, value: object) -> Detail:
    return detail(field, problem.message, code=problem.code, value=str(value)[:40])


def _all_user_ids(values: Sequence[object]) -> bool:
    """Whether every value is a user id (at C speed: the common case of a long valid list)."""
    if not all(type(v) is int for v in values):
        return False
    numbers: Sequence[int] = values  # type: ignore[assignment]
    return not numbers or (min(numbers) >= 1 and max(numbers) <= MAX_USER_ID)


def user_id_details(values: Sequence[object], field: str = "user_ids") -> list[Detail]:
    """One error detail per value that is not a user id, named by its index (the first 100)."""
    if _all_user_ids(values):
        return []
    return [
        user_id_detail(f"{field}[{i}]", problem, value)
        for i, value in enumerate(values)
        if (problem := user_id_problem(value)) is not None
    ][:100]


def check_user_ids(values: Sequence[object], field: str = "user_ids") -> None:
    """ValidationFailed naming every value that is not a user id."""
    if bad := user_id_details(values, field):
        raise ValidationFailed(f"{len(bad):,} of the {field} are not user ids: fix the listed items", bad)


def ascii_int(text: str | None, low: int, high: int) -> int | None:
    """``text`` as an int in ``[low, high]`` when it is plain ASCII digits (not "²" or "٣"), else None."""
    value = None if text is None else bounded_int(text, high)
    return value if value is not None and value >= low else None


def parse_user_id(text: str, field: str = "user_id") -> int:
    """A user id given as decimal digits ("42"), validated."""
    text = text or ""
    value = bounded_int(text, MAX_USER_ID)
    if value is None or value < 1:
        digits = text.isascii() and text.isdigit()
        problem = (
            Problem("user_id_out_of_range", f"user id must be between 1 and {MAX_USER_ID:,}")
            if digits
            else Problem("user_id_invalid", "user id must be a positive integer")
        )
        raise ValidationFailed(problem.message, [user_id_detail(field, problem, text)])
    return value


def slug_problem(value: object) -> Problem | None:
    if not isinstance(value, str):
        return Problem("slug_invalid", "slug must be a string")
    if not is_slug(value):
        return Problem("slug_invalid", f"slug must be {SLUG_HELP}")
    return None


def expiry(
    ttl_seconds: int | None, expires_at: datetime | None, now: datetime, field: str = ""
) -> tuple[datetime | None, list[Detail]]:
    """The expiry time a TTL or an absolute time asks for, and the problems found."""
    prefix = f"{field}." if field else ""
    if ttl_seconds is not None and expires_at is not None:
        return None, [
            detail(f"{prefix}ttl_seconds", "give ttl_seconds or expires_at, not both", code="expiry_both")
        ]
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            return None, [detail(f"{prefix}ttl_seconds", "must be an integer", code="ttl_invalid")]
        if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            return None, [
                detail(
                    f"{prefix}ttl_seconds",
                    f"must be between 1 and {MAX_TTL_SECONDS}",
                    code="ttl_out_of_range",
                    min=1,
                    max=MAX_TTL_SECONDS,
                )
            ]
        return now + timedelta(seconds=ttl_seconds), []
    if expires_at is not None:
        try:  # the one date rule (rules.in_utc): aware, and a moment of years 1..9999 in UTC
            expires_at = in_utc(expires_at)
        except ValueError as exc:
            return None, [detail(f"{prefix}expires_at", str(exc), code=problem_code(exc))]
        if expires_at <= now:
            return None, [
                detail(
                    f"{prefix}expires_at", "must be in the future", code="expiry_past", value=iso(expires_at)
                )
            ]
        if expires_at > now + timedelta(seconds=MAX_TTL_SECONDS):
            return None, [detail(f"{prefix}expires_at", "must be within ten years", code="expiry_too_far")]
        return expires_at, []
    return None, []


def clock(session: DbSession) -> datetime:
    """The database's clock now (history stamps taken after a lock)."""
    value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value


def description_or_error(description: object, limit: int = MAX_DESCRIPTION) -> str:
    """A description as stored (a segment's, a webhook's): None is "", text is stripped; refused
    (422) when it is not text, holds a NUL (PostgreSQL text cannot) or is longer than ``limit``."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationFailed(
            "description must be a string",
            [detail("description", "must be a string", code="description_not_string")],
        )
    description = description.strip()
    if "\x00" in description:
        raise ValidationFailed(
            "description must not contain NUL characters",
            [detail("description", "contains a NUL character", code="description_nul")],
        )
    if len(description) > limit:
        problem = f"at most {limit} characters"
        raise ValidationFailed(
            f"description: {problem}",
            [detail("description", problem, code="description_too_long", max=limit)],
        )
    return description
