"""/api/v1/segments: segment CRUD, members, bulk add, remove and replace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, request, url_for
from pydantic import BaseModel

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import actor, json_body, out, page_args, query_int
from webapp.api.impact import expected_version
from webapp.api.schemas import (
    BulkAddMembers,
    BulkMembers,
    BulkOut,
    BulkRemoveMembers,
    BulkRemoveOut,
    BulkReplaceMembers,
    BulkReplaceOut,
    DeletedOut,
    MemberList,
    MemberOut,
    MembersQuery,
    OperationOut,
    SegmentCreate,
    SegmentList,
    SegmentListQuery,
    SegmentOut,
    SegmentPatch,
)
from webapp.http.transaction import add_consistency_token, transactional
from webapp.models import BulkOperation, Segment
from webapp.models.enums import OperationKind, Reason, ReportStatus, TraitImportMode
from webapp.platform.extensions import db
from webapp.rules import MAX_USER_ID
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments

TAGS = ("segments",)


def segment_out(segment: Segment, members: int | None = None, excluded: int | None = None) -> SegmentOut:
    return SegmentOut(
        slug=segment.slug,
        description=segment.description,
        rollout_percent=segment.rollout_percent,
        created_at=segment.created_at,
        exclusion_group=segment.exclusion_group,
        member_count=members,
        excluded_count=excluded,
    )


@bp.get("/segments")
@operation(tags=TAGS, query=SegmentListQuery, ok=(200, SegmentList))
def list_segments():
    """List live segments, newest first; ``q`` searches slug and description."""
    page, per_page = page_args()
    q = request.args.get("q", "").strip()[:200]
    items, total = segments.list_segments(db.session, q, page, per_page)
    counts = segments.member_counts(db.session, [s.id for s in items])
    return out(
        SegmentList(
            items=[segment_out(s, counts[s.id]) for s in items], page=page, per_page=per_page, total=total
        )
    )


@bp.post("/segments")
@operation(tags=TAGS, json=SegmentCreate, ok=(201, SegmentOut))
@transactional
def create_segment():
    """Create a segment (slug ``^[A-Z][A-Z0-9_]{0,63}$``), optionally with a rollout percentage
    and in an exclusion group (whose rollouts share 100%: 422 naming the group when full)."""
    body = json_body(SegmentCreate)
    segment = segments.create_segment(
        db.session, body.slug, body.description, body.rollout_percent, body.exclusion_group, actor=actor()
    )
    return out(segment_out(segment, 0, 0), 201, {"Location": url_for("api.get_segment", slug=segment.slug)})


@bp.get("/segments/<slug>")
@operation(tags=TAGS, ok=(200, SegmentOut))
def get_segment(slug: str):
    """One segment with its explicit member and rollout-exclusion counts."""
    segment = segments.get_live_segment(db.session, slug)
    stats = segments.segment_stats(db.session, segment)
    return out(segment_out(segment, stats.members, stats.exclusions))


@bp.patch("/segments/<slug>")
@operation(tags=TAGS, json=SegmentPatch, ok=(200, SegmentOut))
@transactional
def patch_segment(slug: str):
    """Change the description, the rollout percentage and/or the exclusion group (null leaves
    it); every change is recorded. Joining a group is refused (409) while some user is an
    explicit member of this segment and of another segment of the group. With ``?catalog_version=``
    (a preview's, POST .../impact) a rollout or group change is refused (409 ``impact_changed``)
    once the segments changed since."""
    body = json_body(SegmentPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    segment, _ = segments.update_segment(
        db.session, slug, **changes, actor=actor(), expected_version=expected_version()
    )
    stats = segments.segment_stats(db.session, segment)
    return out(segment_out(segment, stats.members, stats.exclusions))


@bp.delete("/segments/<slug>")
@operation(tags=TAGS, ok=(200, DeletedOut))
@transactional
def delete_segment(slug: str):
    """Delete a segment: gone for every read at once; every member leaves (history reason
    ``segment_deleted``). Many members' rows are removed in the background (``operation_url``)."""
    removed = bulk.delete_segment(db.session, slug, actor=actor(), expected_version=expected_version())
    return out(deleted_out(slug, *removed))


def deleted_out(slug: str, left: int, removal: BulkOperation | None) -> DeletedOut:
    return DeletedOut(
        slug=slug,
        deleted=True,
        members_removed=left,
        operation_url=operation_out(removal).status_url if removal else None,
    )


def bulk_answer(result: object, done: type[BaseModel]) -> Response:
    """A bulk call's answer: 202 with the operation (and ``Location``) when it went to the
    background, else 200 with the counts as ``done``."""
    if isinstance(result, BulkOperation):
        accepted = operation_out(result)
        return out(accepted, 202, {"Location": accepted.status_url})
    return out(done(**vars(result)))


def operation_out(op: BulkOperation) -> OperationOut:
    return OperationOut(
        id=str(op.id),
        kind=OperationKind(op.kind),
        segment=op.slug if op.segment_id is not None else None,
        mode=TraitImportMode(op.mode) if op.mode else None,
        status=ReportStatus(op.status),
        total=op.total,
        done=op.done,
        progress=100 if op.status == ReportStatus.FINISHED else min(99, op.done * 100 // max(op.total, 1)),
        added=op.added,
        updated=op.updated,
        removed=op.removed,
        skipped=op.skipped,
        error=op.error,
        created_at=op.created_at,
        finished_at=op.finished_at,
        status_url=url_for("api.get_operation", operation_id=op.id, _external=True),
    )


@bp.get("/operations/<operation_id>")
@operation(tags=TAGS, ok=(200, OperationOut))
def get_operation(operation_id: str):
    """A bulk operation's progress (a large bulk add, or a deleted segment's member removal).
    Once it has finished, a ``Segments-Consistency`` header: a token at or past its last
    chunk's commit (the read that sends it back sees every change it made)."""
    operation = bulk.get_operation(db.session, operation_id)
    response = out(operation_out(operation))
    if operation.status == ReportStatus.FINISHED:
        add_consistency_token(response)
    return response


@bp.get("/segments/<slug>/members")
@operation(tags=TAGS, query=MembersQuery, ok=(200, MemberList))
def list_members(slug: str):
    """Explicit members by user id, ``limit`` at a time; pass ``next_after`` back as ``after``."""
    segment = segments.get_live_segment(db.session, slug)
    limit = query_int("limit", 100, 1, 1000)
    after = query_int("after", 0, 0, MAX_USER_ID)
    rows = segments.list_members(db.session, segment, after=after, limit=limit)
    items = [MemberOut(user_id=m.user_id, added_at=m.added_at, expires_at=m.expires_at) for m in rows]
    next_after = items[-1].user_id if len(items) == limit else None
    return out(MemberList(segment=segment.slug, items=items, next_after=next_after))


@bp.post("/segments/<slug>/members")
@operation(tags=TAGS, json=BulkAddMembers, ok=(200, BulkOut), accepted=OperationOut)
@transactional
def bulk_add(slug: str):
    """Add up to 1,000,000 users, with an optional TTL: up to 10,000 at once (200 with the
    counts), more as a background operation (202 and its ``status_url``), never stalling
    anyone; all validated before anything is written. In an exclusion group, users already in
    another segment of the group refuse the add (409 ``group_occupied``) unless
    ``skip_conflicts`` is true: then they are left out and counted as ``skipped``."""
    body = json_body(BulkAddMembers)
    return bulk_answer(_with_expiry(bulk.bulk_add, slug, body, skip_conflicts=body.skip_conflicts), BulkOut)


@bp.delete("/segments/<slug>/members")
@operation(tags=TAGS, json=BulkRemoveMembers, ok=(200, BulkRemoveOut), accepted=OperationOut)
@transactional
def bulk_remove(slug: str):
    """Take up to 1,000,000 users out of the segment, each as a per-user ``del`` would (a
    user in through the rollout is excluded from it): up to 10,000 at once (200 with the
    counts), more as a background operation (202 and its ``status_url``), never stalling
    anyone; all validated before anything is written. One history row per user who left."""
    body = json_body(BulkRemoveMembers)
    result = bulk.bulk_remove(
        db.session, slug, body.user_ids, reason=Reason.API, actor=actor(), expected_version=expected_version()
    )
    return bulk_answer(result, BulkRemoveOut)


@bp.put("/segments/<slug>/members")
@operation(tags=TAGS, json=BulkReplaceMembers, ok=(200, BulkReplaceOut), accepted=OperationOut)
@transactional
def bulk_replace(slug: str):
    """Make the explicit members exactly ``user_ids`` (up to 1,000,000): new ones added,
    listed members given this expiry, the others removed (users in only through the rollout
    stay). Up to 10,000 ids with at most 10,000 members leaving at once (200 with the counts),
    else a background operation (202 and its ``status_url``): it adds the listed ids, then
    removes the members not listed that were members when it started; never stalling anyone;
    all validated before anything is written."""
    return bulk_answer(
        _with_expiry(
            bulk.bulk_replace, slug, json_body(BulkReplaceMembers), expected_version=expected_version()
        ),
        BulkReplaceOut,
    )


def _with_expiry(
    write: Callable[..., Any], slug: str, body: BulkMembers | BulkReplaceMembers, **options: Any
) -> Any:
    """A bulk add or replace as the API asks it: the body's ids and expiry, by the caller."""
    return write(
        db.session,
        slug,
        body.user_ids,
        ttl_seconds=body.ttl_seconds,
        expires_at=body.expires_at,
        reason=Reason.API,
        actor=actor(),
        **options,
    )
