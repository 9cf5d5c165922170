"""What every dashboard view needs: htmx awareness, form parsing, responses with flashes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from flask import flash, make_response, redirect, render_template, request, url_for

from webapp.errors import AppError, NotFound, ValidationFailed, detail
from webapp.http.transaction import abandon
from webapp.models import Segment
from webapp.platform.extensions import db
from webapp.rules import MAX_TTL_SECONDS, PERIOD_RE, parse_moment, problem_code
from webapp.services.common import ascii_int, utcnow
from webapp.services.segments import lifecycle as segments
from webapp.web.id_lists import token_problem, user_id_of
from webapp.web.messages import FormErrors, form_errors, upper_slug

TTL_CHOICES = [
    ("", "No expiry"),
    ("3600", "1 hour"),
    ("86400", "1 day"),
    ("604800", "7 days"),
    ("2592000", "30 days"),
    ("7776000", "90 days"),
]


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
            raise ValidationFailed(
                "choose a TTL from the list",
                [detail("ttl_seconds", "not one of the choices", code="ttl_invalid")],
            )
    until = None
    if until_raw:
        try:  # a datetime-local field has no offset (taken as UTC); an explicit offset is converted
            until = parse_moment(until_raw)
        except ValueError as exc:
            raise ValidationFailed(
                f"expires_at {exc}", [detail("expires_at", str(exc), code=problem_code(exc))]
            ) from None
    return ttl, until


def confirmed_version(form: Mapping[str, str], flag: str = "confirmed") -> int | None:
    """The catalog version a confirmed change was previewed on (the form's hidden
    ``catalog_version``, sent with ``flag``), or None when the change is not confirmed yet."""
    if not form.get(flag):
        return None
    return ascii_int(form.get("catalog_version"), 0, 2**63 - 1)


def catalog_moved(exc: AppError) -> bool:
    """The change met a newer catalog than its preview's (409 ``impact_changed``): the view shows
    the new numbers to confirm again."""
    return any(item.get("code") == "impact_changed" for item in exc.details)


def updated(message: str, back: str, *fragments: str, trigger: str | None = None, **context):
    """After a successful action: htmx gets the fragments plus an out-of-band flash (and the
    ``trigger`` event, HX-Trigger, for the parts of the page that depend on the change);
    a plain form post gets a flash and a redirect (post/redirect/get)."""
    if not is_htmx():
        flash(message, "success")
        return redirect(back)
    body = "".join(render_template(name, **context) for name in fragments)
    body += render_template("_flash_oob.html", messages=[("success", message)])
    response = make_response(body)
    if trigger:
        response.headers["HX-Trigger"] = trigger
    return response


def rejected(
    exc: AppError | FormErrors,
    back: str,
    fragment: str,
    *,
    fields: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
    **context,
):
    """A failed action: nothing of it commits. htmx gets the form fragment again (422) with each
    problem in plain words next to its field; a plain post gets them flashed and a redirect back."""
    abandon()
    errors = exc if isinstance(exc, FormErrors) else form_errors(exc, fields, aliases, request.form)
    if not is_htmx():
        flash(errors.flat(), "error")
        return redirect(back)
    html = render_template(fragment, errors=errors, form=request.form, **context)
    return make_response(html, 422)


def checked_month(period: str) -> str:
    """A month from a month field (``YYYY-MM``) that has started: a report of a month to come
    would be empty, so the dashboard refuses it (in plain words, next to the field)."""
    match = PERIOD_RE.fullmatch(period or "")
    if not match or not 1 <= int(match[2]) <= 12 or not 1970 <= int(match[1]) <= 9998:
        raise ValidationFailed("choose a month", [detail("period", "Choose a month.", code="period_invalid")])
    if period > utcnow().strftime("%Y-%m"):
        label = datetime.strptime(period, "%Y-%m").strftime("%B %Y")
        raise ValidationFailed(
            "that month has not started",
            [
                detail(
                    "period",
                    f"{label} has not started yet: choose this month or an earlier one.",
                    code="period_future",
                    period=period,
                )
            ],
        )
    return period


def typed_user_id(text: str, field: str = "user_id") -> int:
    """A user id typed into a form (spaces ignored), or a plain-words problem for ``field``."""
    text = "".join((text or "").split())
    value = user_id_of(text)
    if value is None:
        problem = (token_problem(text) if text else None) or "type a user id"
        raise ValidationFailed(
            problem,
            [
                detail(
                    field,
                    f"{problem[0].upper()}{problem[1:]}. User ids are whole numbers from 1 up, like 1001.",
                    code="id_token_invalid",
                    token=text[:40],
                )
            ],
        )
    return value


def live_segment(slug: str) -> Segment:
    """The live segment, or a not-found page that offers the upper-case slug when one was
    typed in lower case (the same offer as every form's)."""
    try:
        return segments.get_live_segment(db.session, slug)
    except (NotFound, ValidationFailed) as exc:
        upper = upper_slug(slug)
        if upper:
            raise NotFound(
                f"Slugs are written in upper case: there is no segment called {slug}.",
                [
                    {
                        "offer": url_for(
                            request.endpoint or "web.show_segment",
                            **{**(request.view_args or {}), "slug": upper},
                        ),
                        "message": f"Open {upper}",
                    }
                ],
            ) from None
        if isinstance(exc, NotFound):
            raise  # worded by its detail's code (unknown_segment)
        raise NotFound(f"There is no segment called {slug}.") from None
