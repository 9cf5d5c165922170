"""/api/v1/segments/<slug>/schedule and /activity: planned rollout changes and what happened."""

from __future__ import annotations

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import actor, json_body, out, query_int
from webapp.api.impact import expected_version
from webapp.api.schemas import (
    ActivityList,
    ActivityOut,
    ActivityQuery,
    ScheduleList,
    ScheduleOut,
    ScheduleRequest,
)
from webapp.http.transaction import transactional
from webapp.models import RolloutSchedule
from webapp.platform.extensions import db
from webapp.rules import MAX_USER_ID
from webapp.services.segments import events as activity_log
from webapp.services.segments import schedules
from webapp.services.segments.lifecycle import get_live_segment

TAGS = ("segments",)


def schedule_out(entry: RolloutSchedule) -> ScheduleOut:
    return ScheduleOut(
        id=entry.id,
        at=entry.at,
        rollout_percent=entry.rollout_percent,
        status=schedules.status(entry),
        created_by=entry.created_by,
        created_at=entry.created_at,
        cancelled_at=entry.cancelled_at,
    )


@bp.get("/segments/<slug>/schedule")
@operation(tags=TAGS, ok=(200, ScheduleList))
def list_schedule(slug: str):
    """The segment's scheduled rollout changes, in time order (pending, in force, cancelled)."""
    segment = get_live_segment(db.session, slug)
    return out(
        ScheduleList(
            segment=segment.slug, items=[schedule_out(e) for e in schedules.listing(db.session, segment)]
        )
    )


@bp.post("/segments/<slug>/schedule")
@operation(tags=TAGS, json=ScheduleRequest, ok=(201, ScheduleOut))
@transactional
def add_schedule(slug: str):
    """Schedule a rollout change: from ``at`` on, every read uses ``rollout_percent``, to the
    second, whether or not a job has run; recorded in history at ``at``."""
    body = json_body(ScheduleRequest)
    entry = schedules.add(
        db.session, slug, body.at, body.rollout_percent, actor(), expected_version=expected_version()
    )
    return out(schedule_out(entry), 201)


@bp.delete("/segments/<slug>/schedule/<int:schedule_id>")
@operation(tags=TAGS, ok=(200, ScheduleOut))
@transactional
def cancel_schedule(slug: str, schedule_id: int):
    """Cancel a pending scheduled change (409 once it is in force)."""
    return out(schedule_out(schedules.cancel(db.session, slug, schedule_id, actor())))


@bp.get("/segments/<slug>/activity")
@operation(tags=TAGS, query=ActivityQuery, ok=(200, ActivityList))
def segment_activity(slug: str):
    """Segment-level changes, newest first, with actor and time: created, description, rollout
    and group changes (scheduled ones at their time), bulk imports and removals (one entry
    each, with the count), scheduled and cancelled changes, deletion."""
    segment = get_live_segment(db.session, slug)
    limit = query_int("limit", 50, 1, 500)
    before = query_int("before", MAX_USER_ID, 1, MAX_USER_ID)
    items = activity_log.activity(db.session, segment, limit=limit, before=before)
    return out(
        ActivityList(
            segment=segment.slug,
            next_before=items[-1].id if len(items) == limit else None,
            items=[ActivityOut.of(e) for e in items],
        )
    )
