"""Dashboard: a deleted segment's page (when, by whom, its activity) and its Restore button.

``/segments/<slug>`` shows it when no live segment has the slug (segments.show_segment);
``/segments/<slug>/deleted`` always does (the slug may belong to a newer segment by now).

A restore moves users (its members come back; in a group, users its explicit members hold
leave the group's other rollouts), so the page shows services.impact's numbers for it before
restoring (the API's ``change: "restore"`` dry run, one computation), and the Restore form
carries the catalog version they were computed on: a restore that meets a newer catalog, or
that would take users out of other segments without the numbers having been shown, changes
nothing and brings the page back (post/redirect/get) with the new numbers to confirm. A
refusal is said once, in the Restore card next to the button."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, session, url_for

from webapp.errors import AppError, NotFound
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import abandon, transactional
from webapp.platform.extensions import db
from webapp.services import impact, restore
from webapp.services.common import ascii_int
from webapp.services.segments import events as activity_log
from webapp.services.segments import lifecycle as segments
from webapp.web.blueprint import bp
from webapp.web.messages import error_words

NOTICE = "restore_notice"  # what a refused restore said, shown once on the deleted page


def days() -> int:
    return int(current_app.config.get("RESTORE_DAYS", restore.DEFAULT_DAYS))


def deleted_or_none(slug: str) -> restore.Deleted | None:
    """The most recently deleted segment with this slug, described, or None."""
    try:
        return restore.describe(db.session, restore.find_deleted(db.session, slug), days=days())
    except (NotFound, AppError):
        return None


def deleted_page(seen: restore.Deleted):
    slug = seen.segment.slug
    notice = session.pop(NOTICE, None)
    if not isinstance(notice, dict) or notice.get("slug") != slug:
        notice = {}
    found, refusal = None, notice.get("words")
    if seen.problem is None:
        try:
            found = impact.preview_restore(db.session, slug, days())
        except AppError as exc:  # refused as the restore would be (e.g. group_overlap)
            headline, lines = error_words(exc.message, exc.details)
            refusal = " ".join([headline, *lines])
    return render_template(
        "segments/deleted.html",
        seen=seen,
        entries=activity_log.activity(db.session, seen.segment, limit=50),
        days=days(),
        found=found,
        refusal=refusal,
        changed_since=bool(notice.get("changed")),
        unconfirmed=bool(notice.get("unconfirmed")),
    )


@bp.get("/segments/<slug>/deleted")
def show_deleted(slug: str):
    seen = deleted_or_none(slug)
    if seen is None:
        if segments.is_live_slug(db.session, slug):  # restored since (Back after a restore)
            return redirect(url_for("web.show_segment", slug=slug))
        raise NotFound(f"No segment called {slug} was deleted.")
    return deleted_page(seen)


def _back(slug: str, **notice: object):
    """Post/redirect/get to the deleted page, which shows ``notice`` in the Restore card."""
    abandon()
    session[NOTICE] = {"slug": slug, **notice}
    return redirect(url_for("web.show_deleted", slug=slug))


@bp.post("/segments/<slug>/restore")
@transactional
def restore_segment(slug: str):
    expected = ascii_int(request.form.get("catalog_version"), 0, 2**63 - 1)
    try:
        found = impact.preview_restore(db.session, slug, days())  # what the restore moves
        if expected is None and found.leaving:  # users would leave unseen: show the numbers first
            return _back(slug, unconfirmed=True)
        result = restore.restore_segment(
            db.session, slug, actor=dashboard_actor(), days=days(), expected_version=expected
        )
    except AppError as exc:  # post/redirect/get: the deleted page says why, next to the button
        abandon()
        codes = {str(d.get("code")) for d in exc.details}
        if codes & {"no_deleted_segment", "already_restored"} and segments.is_live_slug(db.session, slug):
            flash(f"Segment {slug} has been restored already.", "success")  # (a second click)
            return redirect(url_for("web.show_segment", slug=slug))
        if "impact_changed" in codes:
            return _back(slug, changed=True)
        if codes & {"slug_taken_since", "restore_expired", "not_restorable", "deletion_in_progress"}:
            return _back(slug)  # the Restore card states it (restore.Deleted.problem)
        headline, lines = error_words(exc.message, exc.details)
        return _back(slug, words=" ".join([headline, *lines]))
    flash(restored_words(slug, result, found), "warning" if result.at_zero else "success")
    return redirect(url_for("web.show_segment", slug=slug))


def restored_words(slug: str, result: restore.Restored, found: impact.Impact) -> str:
    """The flash after a restore: what came back, and the numbers the page showed before."""
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
    moved = [f"{found.own.joining:,} known {'user' if found.own.joining == 1 else 'users'} joined it"]
    if found.own.leaving:
        moved.append(f"{found.own.leaving:,} left it")
    for move in found.others:
        if move.leaving:
            moved.append(f"{move.leaving:,} left {move.slug}")
        if move.joining:
            moved.append(f"{move.joining:,} joined {move.slug}")
    return f"{said} {'; '.join(moved)}."
