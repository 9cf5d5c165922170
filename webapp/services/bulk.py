"""Bulk membership operations on one segment: many users at once, without stalling anyone.

Up to SYNC_LIMIT ids are added in the request's own transaction. A larger list becomes a
``BulkOperation``: the ids are COPYed into ``bulk_operation_ids`` and a job adds them in
chunks of CHUNK ids, each chunk its own short transaction holding the segment share-locked
and its users locked in id order (the global lock order), so per-user writers to the same
segment wait at most one chunk and readers never wait. The job records its cursor (the last
user id done) with each chunk, so it is resumable after a crash and idempotent (re-adding a
member changes nothing). Deleting a segment is instant for everyone (it leaves the catalog at
once); its members' rows are removed the same way, in chunks, by a job.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text

from webapp.errors import NotFound, ValidationFailed, detail
from webapp.models import BulkOperation, Segment
from webapp.models.enums import OperationKind, Reason, ReportStatus
from webapp.queue import enqueue_after_commit
from webapp.rules import MAX_BULK_IDS, MAX_USER_ID
from webapp.services import membership_store, segments
from webapp.services.common import DbSession, expiry, user_id_problem, utcnow
from webapp.services.segments import get_live_segment

SYNC_LIMIT = 10_000  # ids added within the request; more become a background operation
CHUNK = 5_000  # ids (or rows) per transaction of an operation
RUN_JOB = "webapp.jobs.tasks.run_bulk_operation"


@dataclass
class BulkResult:
    segment: str
    received: int
    added: int
    updated: int
    unchanged: int


def bulk_add(session: DbSession, slug: str, user_ids: Sequence[int], *, ttl_seconds: int | None = None,
             expires_at: datetime | None = None, reason: Reason = Reason.API, actor: str = "",
             now: datetime | None = None) -> BulkResult | BulkOperation:
    """Add up to MAX_BULK_IDS users to one segment: done now (a BulkResult) for up to
    SYNC_LIMIT ids, else queued as a resumable BulkOperation. Validated whole first: one bad
    id and nothing happens."""
    at, now = now, now or utcnow()
    if not user_ids:
        raise ValidationFailed("user_ids must not be empty", [detail("user_ids", "empty list")])
    if len(user_ids) > MAX_BULK_IDS:
        raise ValidationFailed(f"at most {MAX_BULK_IDS:,} user ids per request",
                               [detail("user_ids", f"{len(user_ids):,} given")])
    bad = []
    if not all(type(u) is int for u in user_ids) or min(user_ids) < 1 or max(user_ids) > MAX_USER_ID:
        bad = [detail(f"user_ids[{i}]", p, value=str(u)[:40])
               for i, u in enumerate(user_ids) if (p := user_id_problem(u)) is not None]
    until, found = expiry(ttl_seconds, expires_at, now)
    if bad or found:
        raise ValidationFailed("no user was added: fix the listed items", bad[:100] + found)
    segment = get_live_segment(session, slug, lock="share")
    ids = sorted(set(user_ids))
    if len(ids) > SYNC_LIMIT:
        return _start(session, OperationKind.BULK_ADD, segment, now, reason, actor, ids=ids, expires_at=until)
    added, updated = membership_store.upsert_many(session, ids, segment.id, segment.slug, until, now, reason,
                                                  actor, at=at)
    return BulkResult(segment.slug, len(user_ids), added, updated, len(ids) - added - updated)


def delete_segment(session: DbSession, slug: str, actor: str = "",
                   now: datetime | None = None) -> tuple[int, BulkOperation | None]:
    """Delete a segment: gone for every read at commit, slug free again. Its members' rows
    go now if they are few, else in a queued operation; their history rows are stamped at
    the deletion either way. Returns (live members that left, the operation or None)."""
    now = now or utcnow()
    segment, members = segments.retire_segment(session, slug, now)
    if members <= SYNC_LIMIT:
        membership_store.remove_for_deleted_segment(session, segment.id, segment.slug, now, actor)
        return members, None
    return members, _start(session, OperationKind.DELETE_SEGMENT, segment, now, Reason.SEGMENT_DELETED, actor,
                           total=members)


def _start(session: DbSession, kind: OperationKind, segment: Segment, now: datetime, reason: Reason, actor: str,
           *, ids: Sequence[int] = (), expires_at: datetime | None = None, total: int = 0) -> BulkOperation:
    operation = BulkOperation(id=uuid.uuid4(), kind=kind, segment_id=segment.id, slug=segment.slug,
                              status=ReportStatus.QUEUED, total=len(ids) or total, done=0, added=0, updated=0,
                              cursor=0, expires_at=expires_at, reason=reason, actor=actor, attempts=0,
                              created_at=now)
    session.add(operation)
    session.flush()
    if ids:
        _copy_ids(session, operation.id, ids)
    enqueue_operation(operation)
    return operation


def enqueue_operation(operation: BulkOperation) -> None:
    enqueue_after_commit(RUN_JOB, str(operation.id), job_id=operation_job_id(operation.id))


def operation_job_id(operation_id: object) -> str:
    return f"bulk-{operation_id}"


def _copy_ids(session: DbSession, operation_id: uuid.UUID, ids: Sequence[int]) -> None:
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY bulk_operation_ids (operation_id, user_id) FROM STDIN") as copy:
        prefix = f"{operation_id}\t"
        for start in range(0, len(ids), 100_000):
            copy.write("".join(f"{prefix}{u}\n" for u in ids[start:start + 100_000]))


def get_operation(session: DbSession, operation_id: str) -> BulkOperation:
    try:
        key = uuid.UUID(str(operation_id))
    except ValueError:
        key = None
    operation = session.get(BulkOperation, key) if key else None
    if operation is None:
        raise NotFound("no such operation", [detail("id", "no such operation", value=str(operation_id)[:40])])
    return operation


def run_chunk(session: DbSession, operation: BulkOperation) -> bool:
    """Do the operation's next chunk in the caller's transaction; False when nothing is left.
    The cursor, counts and status change with the chunk, so a crash loses nothing."""
    if operation.kind == OperationKind.DELETE_SEGMENT:
        gone = membership_store.remove_for_deleted_segment(session, operation.segment_id, operation.slug,
                                                           operation.created_at, operation.actor, CHUNK)
        operation.done += gone
        return gone == CHUNK
    segment = session.scalar(select(Segment).where(Segment.id == operation.segment_id, Segment.is_live)
                             .with_for_update(read=True))
    if segment is None:
        raise NotFound(f"segment {operation.slug} was deleted while its bulk add ran")
    ids = list(session.scalars(text(
        "SELECT user_id FROM bulk_operation_ids WHERE operation_id = :op AND user_id > :cursor "
        "ORDER BY user_id LIMIT :chunk"), {"op": operation.id, "cursor": operation.cursor, "chunk": CHUNK}))
    if not ids:
        return False
    added, updated = membership_store.upsert_many(session, ids, segment.id, segment.slug, operation.expires_at,
                                                  utcnow(), Reason(operation.reason), operation.actor)
    operation.added += added
    operation.updated += updated
    operation.done += len(ids)
    operation.cursor = ids[-1]
    return len(ids) == CHUNK


def finish(session: DbSession, operation: BulkOperation) -> None:
    operation.status, operation.finished_at = ReportStatus.FINISHED, utcnow()
    session.execute(text("DELETE FROM bulk_operation_ids WHERE operation_id = :op"), {"op": operation.id})
