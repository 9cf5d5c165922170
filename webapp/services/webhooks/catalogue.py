"""The event catalogue: what a subscription can ask for, and which segment activity entry is
which event (``segments.events.record`` emits through :func:`from_segment_event`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

SEGMENT_CREATED = "segment.created"
SEGMENT_CHANGED = "segment.changed"
SEGMENT_DELETED = "segment.deleted"
SEGMENT_RESTORED = "segment.restored"
SCHEDULE_APPLIED = "schedule.applied"
BULK_FINISHED = "bulk_operation.finished"
REPORT_FINISHED = "report.finished"
MEMBERSHIP_CHANGED = "membership.changed"  # per-user changes, batched (outbox.MEMBERSHIP_OUTBOX)
PING = "webhook.test"

EVENT_TYPES: dict[str, str] = {
    SEGMENT_CREATED: "a segment was created (its rollout and exclusion group)",
    SEGMENT_CHANGED: "a segment's description, rollout (from → to), exclusion group or rules changed",
    SEGMENT_DELETED: "a segment was deleted (how many members it had)",
    SEGMENT_RESTORED: "a deleted segment was restored",
    SCHEDULE_APPLIED: "a scheduled rollout change came due and was applied",
    BULK_FINISHED: "a bulk add, remove or replace finished (its counts)",
    REPORT_FINISHED: "a CSV report finished, with a signed download link that expires",
    MEMBERSHIP_CHANGED: "users added to or removed from segments (explicitly, by TTL, in bulk), "
    "many changes in each delivery",
}
SELECTABLE = tuple(EVENT_TYPES)

# segment_events.kind -> (event type, what the change was); kinds not listed emit nothing
_KINDS: dict[str, tuple[str, str | None]] = {
    "created": (SEGMENT_CREATED, None),
    "description_changed": (SEGMENT_CHANGED, "description"),
    "rollout_changed": (SEGMENT_CHANGED, "rollout"),
    "group_changed": (SEGMENT_CHANGED, "exclusion_group"),
    "rules_changed": (SEGMENT_CHANGED, "rules"),
    "deleted": (SEGMENT_DELETED, None),
    "restored": (SEGMENT_RESTORED, None),
    "members_added": (BULK_FINISHED, "add"),
    "members_removed": (BULK_FINISHED, "remove"),
    "members_replaced": (BULK_FINISHED, "replace"),
}


def from_segment_event(
    kind: str, slug: str, actor: str, at: datetime, detail: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of the webhook event a segment activity entry is, or None."""
    known = _KINDS.get(kind)
    if known is None:
        return None
    event_type, change = known
    data: dict[str, Any] = {"segment": slug, "actor": actor, "occurred_at": at.isoformat()}
    if kind == "rollout_changed" and detail.get("scheduled"):
        event_type, change = SCHEDULE_APPLIED, "rollout"
    if event_type in (SEGMENT_CHANGED, SCHEDULE_APPLIED):
        data["change"] = change
    if event_type == BULK_FINISHED:
        data["operation"] = change
    data.update({k: v for k, v in detail.items() if k not in ("scheduled",)})
    return event_type, data
