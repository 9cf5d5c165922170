"""Dashboard: a deleted segment's page (when, by whom, its activity) and its Restore button.

``/segments/<slug>`` shows it when no live segment has the slug (segments.show_segment);
``/segments/<slug>/deleted`` always does (the slug may belong to a newer segment by now)."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, url_for

from webapp.errors import AppError, NotFound
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import abandon, transactional
from webapp.platform.extensions import db
from webapp.services import activity_log, restore, segments
from webapp.web.blueprint import bp
from webapp.web.messages import error_words


def days() -> int:
    return int(current_app.config.get("RESTORE_DAYS", restore.DEFAULT_DAYS))


def deleted_or_none(slug: str) -> restore.Deleted | None:
    """The most recently deleted segment with this slug, described, or None."""
    try:
        return restore.describe(db.session, restore.find_deleted(db.session, slug), days=days())
    except (NotFound, AppError):
        return None


def deleted_page(seen: restore.Deleted):
    return render_template(
        "segments/deleted.html",
        seen=seen,
        entries=activity_log.activity(db.session, seen.segment, limit=50),
        days=days(),
    )


@bp.get("/segments/<slug>/deleted")
def show_deleted(slug: str):
    seen = deleted_or_none(slug)
    if seen is None:
        raise NotFound(f"No segment called {slug} was deleted.")
    return deleted_page(seen)


@bp.post("/segments/<slug>/restore")
@transactional
def restore_segment(slug: str):
    try:
        result = restore.restore_segment(db.session, slug, actor=dashboard_actor(), days=days())
    except AppError as exc:  # post/redirect/get: the deleted page says why, with links
        abandon()
        codes = {str(d.get("code")) for d in exc.details}
        if codes & {"no_deleted_segment", "already_restored"} and segments.is_live_slug(db.session, slug):
            flash(f"Segment {slug} has been restored already.", "success")  # (a second click)
            return redirect(url_for("web.show_segment", slug=slug))
        headline, lines = error_words(exc.message, exc.details)
        flash(" ".join([headline, *lines]), "error")
        return redirect(url_for("web.show_deleted", slug=slug))
    back = f"{result.members:,} {'member' if result.members == 1 else 'members'}"
    said = f"Segment {slug} restored: {back} {'are coming' if result.operation else 'are'} back"
    if result.expired:
        said += f" ({result.expired:,} had expired while it was deleted)"
    if result.at_zero:
        said += (
            f". Its rollout is 0%: group {result.exclusion_group} has no room for its "
            f"{result.wanted_percent:g}% now."
        )
    elif result.rollout_percent:
        said += f", with its {result.rollout_percent:g}% rollout."
    else:
        said += "."
    flash(said, "warning" if result.at_zero else "success")
    return redirect(url_for("web.show_segment", slug=slug))
