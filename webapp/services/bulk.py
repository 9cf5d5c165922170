"""Bulk membership operations on one segment (many users at once)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from webapp.errors import ValidationFailed, detail
from webapp.models.enums import Reason
from webapp.rules import MAX_BULK_IDS, MAX_USER_ID
from webapp.services import membership_store
from webapp.services.common import DbSession, expiry, user_id_problem, utcnow
from webapp.services.segments import get_live_segment


@dataclass
class BulkResult:
    segment: str
    received: int
    added: int
    updated: int
    unchanged: int


def bulk_add(
    session: DbSession,
    slug: str,
    user_ids: Sequence[int],
    *,
    ttl_seconds: int | None = None,
    expires_at: datetime | None = None,
    reason: Reason = Reason.API,
    actor: str = "",
    now: datetime | None = None,
) -> BulkResult:
    """Add up to MAX_BULK_IDS users to one segment with set-based statements; all or nothing."""
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
    # Exclusive on the segment row: per-user writers to it wait (reads never do).
    segment = get_live_segment(session, slug, lock="update")
    membership_store.expire_batch(session, now, MAX_BULK_IDS, segment_id=segment.id)
    added, updated = membership_store.bulk_insert(session, user_ids, segment.id, segment.slug, until, now,
                                                  reason, actor, at=at)
    return BulkResult(segment.slug, len(user_ids), added, updated, len(set(user_ids)) - added - updated)
