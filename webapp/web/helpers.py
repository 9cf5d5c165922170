"""What every dashboard view needs: htmx awareness, form parsing, responses with flashes."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import flash, make_response, redirect, render_template, request

from webapp.errors import AppError, ValidationFailed, detail
from webapp.rules import MAX_TTL_SECONDS
from webapp.services.common import ascii_int
from webapp.transaction import abandon

TTL_CHOICES = [("", "No expiry"), ("3600", "1 hour"), ("86400", "1 day"), ("604800", "7 days"),
               ("2592000", "30 days"), ("7776000", "90 days")]


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def form_expiry() -> tuple[int | None, datetime | None]:
    """TTL preset (seconds) or an absolute UTC time from a datetime-local field."""
    ttl_raw = request.form.get("ttl_seconds", "").strip()
    until_raw = request.form.get("expires_at", "").strip()
    ttl = None
    if ttl_raw:
        ttl = ascii_int(ttl_raw, 1, MAX_TTL_SECONDS)
        if ttl is None:
            raise ValidationFailed("choose a TTL from the list", [detail("ttl_seconds", "not one of the choices")])
    until = None
    if until_raw:
        try:  # a datetime-local field has no offset (taken as UTC); an explicit offset is kept
            until = datetime.fromisoformat(until_raw.replace("Z", "+00:00"))
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
        except ValueError:
            raise ValidationFailed("expiry must be a date and time", [detail("expires_at", "not a date")]) from None
    return ttl, until


def field_errors(exc: AppError) -> dict[str, str]:
    """details -> {form field: message}; nested API-style fields keep their first part."""
    errors: dict[str, str] = {}
    for item in exc.details:
        field = str(item.get("field", "")).split(".")[0].split("[")[0] or "form"
        text = item.get("message", "")
        if item.get("slug"):
            text = f"{item['slug']}: {text}"
        errors[field] = f"{errors[field]}; {text}" if field in errors else text
    return errors


def updated(message: str, back: str, *fragments: str, **context):
    """After a successful action: htmx gets the fragments plus an out-of-band flash,
    a plain form post gets a flash and a redirect (post/redirect/get)."""
    if not is_htmx():
        flash(message, "success")
        return redirect(back)
    body = "".join(render_template(name, **context) for name in fragments)
    body += render_template("_flash_oob.html", messages=[("success", message)])
    return make_response(body)


def rejected(exc: AppError, back: str, fragment: str, **context):
    """A failed action: nothing of it commits; htmx gets the form fragment with field errors
    (422), a plain post gets the error flashed and a redirect back."""
    abandon()
    if not is_htmx():
        flash(exc.message + "".join(f" — {m}" for m in field_errors(exc).values()), "error")
        return redirect(back)
    html = render_template(fragment, errors=field_errors(exc), error=exc.message, form=request.form, **context)
    return make_response(html, exc.status)
