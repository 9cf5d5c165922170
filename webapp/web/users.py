"""Dashboard: user lookup, a user's segments (add/remove), history, monthly report."""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from webapp.auth import dashboard_actor
from webapp.errors import AppError, ValidationFailed, detail
from webapp.extensions import db, report_requests
from webapp.models.enums import Reason
from webapp.services import history, reports, segments, user_changes
from webapp.services.common import parse_user_id, utcnow
from webapp.services.read_path import active_segments
from webapp.services.user_changes import AddSpec
from webapp.transaction import transactional
from webapp.web import bp
from webapp.web.helpers import TTL_CHOICES, form_expiry, rejected, updated

HISTORY_LIMIT = 200


@bp.get("/users")
def lookup_user():
    raw = request.args.get("id", "").strip()
    return redirect(url_for("web.show_user", user_id=parse_user_id(raw, "id")))


def _user_context(uid: int) -> dict:
    entries = history.user_history(db.session, uid)
    return {"user_id": uid, "active": active_segments(db.session, uid),
            "history": entries[::-1][:HISTORY_LIMIT], "history_total": len(entries),
            "ttl_choices": TTL_CHOICES, "month": utcnow().strftime("%Y-%m")}


@bp.get("/users/<user_id>")
def show_user(user_id: str):
    uid = parse_user_id(user_id)
    return render_template("users/show.html", form={}, errors={}, **_user_context(uid))


@bp.post("/users/<user_id>/segments")
@transactional
def change_user(user_id: str):
    uid = parse_user_id(user_id)
    back = url_for("web.show_user", user_id=uid)
    try:
        if request.form.get("remove"):
            result = user_changes.change_user_segments(db.session, uid, [], [request.form["remove"]],
                                                       reason=Reason.DASHBOARD, actor=dashboard_actor())
            message = f"Removed from {', '.join(result.removed)}." if result.removed else "Not a member."
        else:
            slug = request.form.get("slug", "").strip().upper()
            if not slug:
                raise ValidationFailed("choose a segment", [detail("slug", "required")])
            ttl, until = form_expiry()
            result = user_changes.change_user_segments(db.session, uid, [AddSpec(slug, ttl, until)], [],
                                                       reason=Reason.DASHBOARD, actor=dashboard_actor())
            verb = "Added to" if result.added else "Expiry updated for" if result.updated else "Already in"
            message = f"{verb} {slug}."
    except AppError as exc:
        return rejected(exc, back, "users/_add_form.html", **_user_context(uid))
    return updated(message, back, "users/_add_form.html", "users/_segments_oob.html", "users/_history_oob.html",
                   form={}, errors={}, **_user_context(uid))


@bp.post("/users/<user_id>/report")
@report_requests
@transactional
def user_report(user_id: str):
    uid = parse_user_id(user_id)
    report = reports.request_report(db.session, user_id=uid, period=request.form.get("period", "").strip(),
                                    requested_by=dashboard_actor())
    return render_template("reports/_status.html", report=report)


@bp.get("/fragments/slugs")
def slug_options():
    """<option>s for the slug autocomplete (datalist), matching what was typed."""
    q = request.args.get("slug", request.args.get("q", "")).strip()[:64]
    items, _ = segments.list_segments(db.session, q, 1, 20)
    return render_template("users/_slug_options.html", items=items)
