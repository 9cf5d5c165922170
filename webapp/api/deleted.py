"""/api/v1/segments/<slug>/deleted and /restore: a deleted segment, and bringing it back."""

from __future__ import annotations

from flask import current_app

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import actor, out
from webapp.api.impact import expected_version
from webapp.api.schemas import ActivityOut, DeletedSegmentOut, RestoredOut
from webapp.api.segments import operation_out, segment_out
from webapp.http.transaction import transactional
from webapp.platform.extensions import db
from webapp.services import restore
from webapp.services.segments import events as activity_log
from webapp.services.segments import lifecycle as segments

TAGS = ("segments",)


def restore_days() -> int:
    return int(current_app.config.get("RESTORE_DAYS", restore.DEFAULT_DAYS))


@bp.get("/segments/<slug>/deleted")
@operation(tags=TAGS, ok=(200, DeletedSegmentOut))
def deleted_segment(slug: str):
    """The most recently deleted segment with this slug: when and by whom, its rollout and
    group then, what its deletion kept, its activity, and whether ``POST .../restore`` would be
    accepted now (``problem`` says why not). 404 ``no_deleted_segment`` if none was deleted."""
    seen = restore.describe(db.session, restore.find_deleted(db.session, slug), days=restore_days())
    items = activity_log.activity(db.session, seen.segment, limit=50)
    return out(
        DeletedSegmentOut(
            slug=seen.segment.slug,
            description=seen.segment.description,
            deleted_at=seen.deleted_at,
            deleted_by=seen.deleted_by,
            rollout_percent=seen.rollout_percent,
            exclusion_group=seen.exclusion_group,
            kept_members=seen.kept_members,
            excluded_count=seen.exclusions,
            restorable_until=seen.restorable_until,
            restorable=seen.problem is None,
            problem=seen.problem,
            taken_by=seen.taken_by.slug if seen.taken_by is not None else None,
            activity=[ActivityOut.of(e) for e in items],
        )
    )


@bp.post("/segments/<slug>/restore")
@operation(tags=TAGS, ok=(200, RestoredOut))
@transactional
def restore_segment(slug: str):
    """Restore the most recently deleted segment with this slug, within ``RESTORE_DAYS`` (30)
    of its deletion: the same segment (salt, description, rollout and group), its explicit
    members with their expiries (those whose expiry passed meanwhile stay gone) and its
    exclusions; history records the returns with reason ``restored``. At 0%
    (``restored_at_zero``) when its group has no room for its rollout. More than 10,000
    members come back in the background (``operation_url``). 409: ``slug_taken_since`` (a
    newer segment has the slug: ``segment``), ``restore_expired``, ``not_restorable``,
    ``deletion_in_progress``, ``already_restored``, ``group_overlap``; 404
    ``no_deleted_segment``. A restore moves users (its members back, in a group users leaving
    the others' rollouts): preview it first (``POST .../impact`` with ``change: "restore"``) and
    send its ``?catalog_version=``: 409 ``impact_changed`` once the segments changed since."""
    result = restore.restore_segment(
        db.session, slug, actor=actor(), days=restore_days(), expected_version=expected_version()
    )
    stats = segments.segment_stats(db.session, result.segment)
    return out(
        RestoredOut(
            segment=segment_out(result.segment, stats.members, stats.exclusions),
            members_restored=result.members,
            expired_while_deleted=result.expired,
            excluded_count=result.exclusions,
            rollout_percent=result.rollout_percent,
            wanted_percent=result.wanted_percent,
            restored_at_zero=result.at_zero,
            operation_url=operation_out(result.operation).status_url if result.operation else None,
        )
    )
