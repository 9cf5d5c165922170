"""Dashboard: segments list, segment page, members, bulk add."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from webapp.auth import dashboard_actor
from webapp.errors import AppError, ValidationFailed, detail
from webapp.extensions import db
from webapp.models import BulkOperation
from webapp.models.enums import Reason
from webapp.rules import MAX_BULK_IDS, MAX_USER_ID
from webapp.services import bulk, rollout, segment_activity, segments, user_changes
from webapp.services.common import ascii_int, parse_user_id
from webapp.services.id_lists import parse_user_ids
from webapp.transaction import transactional
from webapp.web import bp
from webapp.web.helpers import TTL_CHOICES, form_expiry, is_htmx, rejected, updated

PER_PAGE = 25
MEMBERS_PAGE = 25
SAMPLE = 10_000


def _listing() -> dict:
    q = request.args.get("q", "").strip()[:200]
    page = ascii_int(request.args.get("page"), 1, 1_000_000) or 1
    items, total = segments.list_segments(db.session, q, page, PER_PAGE)
    counts = segments.member_counts(db.session, [s.id for s in items])
    pages = max(1, -(-total // PER_PAGE))
    return {"segments": items, "counts": counts, "total": total, "q": q, "page": page, "pages": pages}


@bp.get("/")
def index():
    context = _listing()
    if is_htmx() and request.headers.get("HX-Target") == "segment-table":
        return render_template("segments/_table.html", **context)
    return render_template("segments/index.html", form={}, errors={}, **context)


@bp.post("/segments")
@transactional
def create_segment():
    form = request.form
    try:
        segment = segments.create_segment(db.session, form.get("slug", "").strip(), form.get("description"),
                                          form.get("rollout_percent", "").strip() or None)
    except AppError as exc:
        return rejected(exc, url_for("web.index"), "segments/_create_form.html")
    return updated(f"Segment {segment.slug} created.", url_for("web.index"),
                   "segments/_create_form.html", "segments/_table_oob.html",
                   form={}, errors={}, **_listing())


@bp.get("/segments/<slug>")
def show_segment(slug: str):
    segment = segments.get_live_segment(db.session, slug)
    return render_template("segments/show.html", **_segment_context(segment), errors={}, form={},
                           ttl_choices=TTL_CHOICES)


def _settings_context(segment) -> dict:
    """The settings form's rollout preview: how many of user ids 1..SAMPLE are in."""
    return {"segment": segment, "sample": SAMPLE,
            "sample_in": rollout.sample_share(segment.salt, segment.rollout_basis_points, SAMPLE)}


def _segment_context(segment) -> dict:
    return {
        **_settings_context(segment), "stats": segments.segment_stats(db.session, segment),
        "events": segment_activity.recent_events(db.session, segment),
        "series": segment_activity.member_series(db.session, segment),
        **_members_context(segment),
    }


def _members_context(segment, args=None) -> dict:
    """One page of members from the query string (``after`` cursor, ``user_id`` filter)."""
    args = request.args if args is None else args
    after = ascii_int(args.get("after"), 0, MAX_USER_ID) or 0
    find = args.get("user_id", "").strip()
    user_id = parse_user_id(find, "user_id") if find else None
    rows = segments.list_members(db.session, segment, after=after, limit=MEMBERS_PAGE, user_id=user_id)
    next_after = rows[-1].user_id if len(rows) == MEMBERS_PAGE else None
    return {"members": rows, "next_after": next_after, "after": after, "find": find}


@bp.get("/segments/<slug>/members")
def members(slug: str):
    segment = segments.get_live_segment(db.session, slug)
    if not is_htmx():
        where = url_for("web.show_segment", slug=slug, after=request.args.get("after"),
                        user_id=request.args.get("user_id"))  # (None values are left out)
        return redirect(where + "#members")
    return render_template("segments/_members.html", segment=segment, **_members_context(segment))


@bp.get("/segments/<slug>/rollout-preview")
def rollout_preview(slug: str):
    segment = segments.get_live_segment(db.session, slug)
    try:
        basis_points = rollout.percent_to_basis_points(request.args.get("rollout_percent", "0") or "0")
    except ValueError as exc:
        return render_template("segments/_rollout_preview.html", problem=str(exc))
    return render_template("segments/_rollout_preview.html", sample=SAMPLE,
                           sample_in=rollout.sample_share(segment.salt, basis_points, SAMPLE))


@bp.post("/segments/<slug>/settings")
@transactional
def update_settings(slug: str):
    form = request.form
    back = url_for("web.show_segment", slug=slug)
    try:
        segment, _ = segments.update_segment(db.session, slug, description=form.get("description", ""),
                                             rollout_percent=form.get("rollout_percent", "").strip() or 0)
    except AppError as exc:
        return rejected(exc, back, "segments/_settings_form.html",
                        **_settings_context(segments.get_live_segment(db.session, slug)))
    return updated(f"{segment.slug} saved.", back, "segments/_settings_form.html", form={}, errors={},
                   **_settings_context(segment))


@bp.post("/segments/<slug>/members")
@transactional
def add_members(slug: str):
    back = url_for("web.show_segment", slug=slug)
    segment = segments.get_live_segment(db.session, slug)
    try:
        upload = request.files.get("file")
        if upload and upload.filename:
            ids = parse_user_ids(upload.stream, MAX_BULK_IDS, "file")
        else:
            ids = parse_user_ids(request.form.get("user_ids", "").splitlines(), MAX_BULK_IDS)
        ttl, until = form_expiry()
        result = bulk.bulk_add(db.session, slug, ids, ttl_seconds=ttl, expires_at=until,
                               reason=Reason.DASHBOARD, actor=dashboard_actor())
    except AppError as exc:
        return rejected(exc, back, "segments/_bulk_form.html", segment=segment, ttl_choices=TTL_CHOICES)
    if isinstance(result, BulkOperation):
        message = f"Adding {result.total:,} ids in the background: progress below."
        return updated(message, back, "segments/_bulk_form.html", segment=segment, form={}, errors={},
                       ttl_choices=TTL_CHOICES, operation=result)
    message = (f"{result.added:,} added, {result.updated:,} expiry updated, "
               f"{result.unchanged:,} already members ({result.received:,} ids received).")
    return updated(message, back, "segments/_bulk_form.html", "segments/_members_oob.html",
                   segment=segment, form={}, errors={}, ttl_choices=TTL_CHOICES, **_members_context(segment, {}))


@bp.get("/operations/<operation_id>/status")
def operation_status(operation_id: str):
    return render_template("segments/_operation.html", operation=bulk.get_operation(db.session, operation_id))


@bp.post("/segments/<slug>/members/<user_id>/remove")
@transactional
def remove_member(slug: str, user_id: str):
    uid = parse_user_id(user_id)
    result = user_changes.change_user_segments(db.session, uid, [], [slug], reason=Reason.DASHBOARD,
                                                actor=dashboard_actor())
    segment = segments.get_live_segment(db.session, slug)
    message = f"User {uid} removed from {slug}." if result.removed else f"User {uid} was not a member."
    return updated(message, url_for("web.show_segment", slug=slug), "segments/_members.html",
                   segment=segment, **_members_context(segment))


@bp.get("/segments/<slug>/delete")
def confirm_delete(slug: str):
    segment = segments.get_live_segment(db.session, slug)
    return render_template("segments/confirm_delete.html", segment=segment,
                           stats=segments.segment_stats(db.session, segment))


@bp.post("/segments/<slug>/delete")
@transactional
def delete_segment(slug: str):
    if request.form.get("confirm") != slug:
        raise ValidationFailed("type the slug to confirm", [detail("confirm", "does not match the slug")])
    left, removal = bulk.delete_segment(db.session, slug, actor=dashboard_actor())
    later = " (their rows are being removed in the background)" if removal else ""
    flash(f"Segment {slug} deleted; {left:,} members left it{later}.", "success")
    return redirect(url_for("web.index"))
