"""/api/v1/users/<id>: active segments, atomic add/del, history."""
from __future__ import annotations

from webapp.api import bp
from webapp.api.helpers import actor, json_body, out, query_time
from webapp.api.schemas import (
    ActiveSegmentOut,
    ChangeOut,
    HistoryEntryOut,
    HistoryOut,
    UserSegments,
    UserSegmentsChange,
)
from webapp.errors import ValidationFailed, detail
from webapp.extensions import db
from webapp.services import history, memberships
from webapp.services.common import parse_user_id
from webapp.services.memberships import AddSpec
from webapp.transaction import transactional


def active_out(user_id: int) -> list[ActiveSegmentOut]:
    return [ActiveSegmentOut(slug=a.slug, source=a.source, expires_at=a.expires_at)
            for a in memberships.active_segments(db.session, user_id)]


@bp.get("/users/<user_id>/segments")
def user_segments(user_id: str):
    uid = parse_user_id(user_id)
    return out(UserSegments(user_id=uid, segments=active_out(uid)))


@bp.post("/users/<user_id>/segments")
@transactional
def change_user_segments(user_id: str):
    uid = parse_user_id(user_id)
    body = json_body(UserSegmentsChange)
    add = [AddSpec(item) if isinstance(item, str) else AddSpec(item.slug, item.ttl_seconds, item.expires_at)
           for item in body.add]
    result = memberships.change_user_segments(
        db.session, uid, add, body.delete, ttl_seconds=body.ttl_seconds,
        expires_at=body.expires_at, reason="api", actor=actor())
    return out(ChangeOut(user_id=uid, added=result.added, updated=result.updated,
                         unchanged=result.unchanged, removed=result.removed,
                         not_members=result.not_members, segments=active_out(uid)))


@bp.get("/users/<user_id>/history")
def user_history(user_id: str):
    uid = parse_user_id(user_id)
    start, end = query_time("from"), query_time("to")
    if start and end and start >= end:
        raise ValidationFailed("from must be before to", [detail("from", "must be before to")])
    entries = history.user_history(db.session, uid, start, end)
    items = [HistoryEntryOut(segment=e.segment, operation=e.operation, occurred_at=e.occurred_at,
                             reason=e.reason, actor=e.actor) for e in entries]
    return out(HistoryOut(user_id=uid, start=start, end=end, items=items))
