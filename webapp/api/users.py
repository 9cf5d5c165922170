"""/api/v1/users/<id>: active segments, atomic add/del, history."""

from __future__ import annotations

from flask import Response

from webapp.api import idempotency
from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import actor, consistency_token, json_body, out, query_time, reader
from webapp.api.hot_routes import USER_SEGMENTS
from webapp.api.schemas import (
    ActiveSegmentOut,
    CauseOut,
    ChangeOut,
    HistoryEntryOut,
    HistoryOut,
    HistoryQuery,
    LookupOut,
    LookupRequest,
    UserSegments,
    UserSegmentsChange,
)
from webapp.errors import ValidationFailed, detail
from webapp.http.auth import READ, requires_scope
from webapp.http.transaction import transactional
from webapp.models.enums import Reason
from webapp.platform.extensions import db
from webapp.services.common import parse_user_id
from webapp.services.history import replay as history
from webapp.services.membership import user_changes
from webapp.services.membership.user_changes import AddSpec, ChangeResult
from webapp.services.reads.catalog import ActiveSegment
from webapp.services.reads.path import active_segments

TAGS = ("users",)


def _as_out(active: list[ActiveSegment]) -> list[ActiveSegmentOut]:
    return [ActiveSegmentOut(slug=a.slug, source=a.source, expires_at=a.expires_at) for a in active]


def change_out(result: ChangeResult) -> ChangeOut:
    """What a change did, plus the user's segments as this (uncommitted) transaction sees them."""
    return ChangeOut(
        user_id=result.user_id,
        added=result.added,
        updated=result.updated,
        unchanged=result.unchanged,
        removed=result.removed,
        not_members=result.not_members,
        segments=_as_out(active_segments(db.session, result.user_id)),
    )


@USER_SEGMENTS.route(bp)
@operation(tags=TAGS, ok=(200, UserSegments))
def user_segments(user_id: str):
    """The segments the user is in now (explicit and rollout), sorted by slug."""
    body = reader().answer(parse_user_id(user_id), token=consistency_token())  # (as in front of Flask)
    return Response(body, mimetype="application/json")


@bp.post("/users/segments:lookup")
@idempotency.read_only
@requires_scope(READ)  # a read, whatever its method: every token scope may call it
@operation(tags=TAGS, json=LookupRequest, ok=(200, LookupOut))
def lookup_segments():
    """Several users' segments at once (up to 1000): each answer exactly as the single read
    (same freshness, one statement), in the order asked; a repeated id is answered twice."""
    body = json_body(LookupRequest)
    return Response(reader().lookup_answer(body.user_ids, consistency_token()), mimetype="application/json")


@bp.post("/users/<user_id>/segments")
@operation(tags=TAGS, json=UserSegmentsChange, ok=(200, ChangeOut))
@transactional
def change_user_segments(user_id: str):
    """Add (``add``) and remove (``del``) segments in one transaction: all or nothing."""
    uid = parse_user_id(user_id)
    body = json_body(UserSegmentsChange)
    add = [
        AddSpec(item) if isinstance(item, str) else AddSpec(item.slug, item.ttl_seconds, item.expires_at)
        for item in body.add
    ]
    result = user_changes.change_user_segments(
        db.session,
        uid,
        add,
        body.delete,
        ttl_seconds=body.ttl_seconds,
        expires_at=body.expires_at,
        reason=Reason.API,
        actor=actor(),
    )
    return out(change_out(result))


@bp.get("/users/<user_id>/history")
@operation(tags=TAGS, query=HistoryQuery, ok=(200, HistoryOut))
def user_history(user_id: str):
    """The user's membership changes in ``[from, to)``, rollout changes included."""
    uid = parse_user_id(user_id)
    start, end = query_time("from"), query_time("to")
    if start and end and start >= end:
        raise ValidationFailed(
            "from must be before to", [detail("from", "must be before to", code="range_reversed")]
        )
    entries = history.user_history(db.session, uid, start, end)
    items = [
        HistoryEntryOut(
            segment=e.segment,
            operation=e.operation,
            occurred_at=e.occurred_at,
            reason=e.reason,
            actor=e.actor,
            cause=CauseOut(**vars(e.cause)) if e.cause is not None else None,
        )
        for e in entries
    ]
    return out(HistoryOut(user_id=uid, start=start, end=end, items=items))
