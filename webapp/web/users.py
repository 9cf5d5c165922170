"""Dashboard: user lookup, a user's segments (add/remove), history, monthly reports."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from webapp.errors import AppError, ValidationFailed, detail
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.models import Report
from webapp.models.enums import Reason
from webapp.platform.extensions import db, report_requests
from webapp.services.common import parse_user_id, utcnow
from webapp.services.history import replay as history
from webapp.services.history import reports
from webapp.services.membership import user_changes
from webapp.services.membership.user_changes import AddSpec
from webapp.services.reads.path import active_segments
from webapp.services.segments import lifecycle as segments
from webapp.services.traits import users as user_traits
from webapp.web.blueprint import bp
from webapp.web.filters import month_name
from webapp.web.helpers import TTL_CHOICES, checked_month, form_expiry, rejected, typed_user_id, updated
from webapp.web.reports import sheet_separator

HISTORY_LIMIT = 200
USER_REPORTS = 10  # the latest reports of the user listed on their page
ADD_FIELDS = ("slug", "ttl_seconds", "expires_at")


def _lookup_problem(raw: str) -> str:
    if not raw.strip():
        return "Type a user id to look a user up."
    try:
        typed_user_id(raw)
    except ValidationFailed as exc:
        return str(exc.details[0]["message"])
    return ""


@bp.get("/users")
def lookup_user():
    """The header's *Find user*: spaces are ignored; anything that is not a user id is
    explained on a normal page with the lookup form, not as an error."""
    raw = request.args.get("id", "")
    problem = _lookup_problem(raw)
    if not problem:
        return redirect(url_for("web.show_user", user_id=typed_user_id(raw)))
    return render_template("users/lookup.html", problem=problem, typed=raw.strip()[:40])


def _user_context(uid: int) -> dict:
    entries = history.user_history(db.session, uid)
    active = active_segments(db.session, uid)
    traits = user_traits.get_traits(db.session, uid)
    return {
        "user_id": uid,
        "active": active,
        "why": user_traits.why_by_rules(
            db.session, [a.slug for a in active if a.source == "rule"], traits.traits
        ),
        "traits": traits,
        "history": entries[::-1][:HISTORY_LIMIT],
        "history_total": len(entries),
        "ttl_choices": TTL_CHOICES,
        **_reports_context(uid),
    }


def _reports_context(uid: int, new: Report | None = None) -> dict:
    """The user's latest monthly reports, newest first, each labelled with its month."""
    recent = reports.list_reports(db.session, USER_REPORTS, user_id=uid)
    if new is not None and new not in recent:
        recent.insert(0, new)
    return {"user_id": uid, "user_reports": recent[:USER_REPORTS], "month": utcnow().strftime("%Y-%m")}


@bp.get("/users/<user_id>")
def show_user(user_id: str):
    problem = _lookup_problem(user_id)
    if problem:
        return render_template("users/lookup.html", problem=problem, typed=user_id[:40]), 404
    uid = parse_user_id("".join(user_id.split()))
    return render_template("users/show.html", form={}, errors={}, **_user_context(uid))


@bp.post("/users/<user_id>/segments")
@transactional
def change_user(user_id: str):
    uid = parse_user_id(user_id)
    back = url_for("web.show_user", user_id=uid)
    try:
        if request.form.get("remove"):
            result = user_changes.change_user_segments(
                db.session,
                uid,
                [],
                [request.form["remove"]],
                reason=Reason.DASHBOARD,
                actor=dashboard_actor(),
            )
            message = f"Removed from {', '.join(result.removed)}." if result.removed else "Not a member."
        else:
            slug = (request.form.get("use_slug") or request.form.get("slug", "")).strip()
            if not slug:
                raise ValidationFailed(
                    "choose a segment", [detail("slug", "Choose a segment.", code="required")]
                )
            ttl, until = form_expiry()
            result = user_changes.change_user_segments(
                db.session,
                uid,
                [AddSpec(slug, ttl, until)],
                [],
                reason=Reason.DASHBOARD,
                actor=dashboard_actor(),
            )
            verb = "Added to" if result.added else "Expiry updated for" if result.updated else "Already in"
            message = f"{verb} {slug}."
    except AppError as exc:
        return rejected(
            exc,
            back,
            "users/_add_form.html",
            fields=ADD_FIELDS,
            aliases={"add": "slug", "del": "slug"},
            **_user_context(uid),
        )
    return updated(
        message,
        back,
        "users/_add_form.html",
        "users/_segments_oob.html",
        "users/_history_oob.html",
        form={},
        errors={},
        **_user_context(uid),
    )


@bp.post("/users/<user_id>/report")
@report_requests
@transactional
def user_report(user_id: str):
    """A monthly report of this user: the card comes back with it at the top of the list
    (it polls itself until it can be downloaded); any number of them in a row."""
    uid = parse_user_id(user_id)
    back = url_for("web.show_user", user_id=uid)
    period = request.form.get("period", "").strip()
    try:
        report = reports.request_report(
            db.session,
            user_id=uid,
            period=checked_month(period),
            requested_by=dashboard_actor(),
            format=reports.SHEET_FORMAT,
            separator=sheet_separator(),
        )
    except AppError as exc:
        return rejected(
            exc, back, "users/_reports.html", fields=("period", "separator"), **_reports_context(uid)
        )
    return updated(
        f"Report for {month_name(period)} requested: it is listed under the form.",
        back,
        "users/_reports.html",
        form={},
        errors={},
        **_reports_context(uid, report),
    )


@bp.get("/fragments/slugs")
def slug_options():
    """<option>s for the slug autocomplete (datalist), matching what was typed."""
    q = request.args.get("slug", request.args.get("q", "")).strip()[:64]
    items, _ = segments.list_segments(db.session, q, 1, 20)
    return render_template("users/_slug_options.html", items=items)
