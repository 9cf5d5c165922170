"""The closed vocabularies stored in the database and shown by the API."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ADDED = "added"
    REMOVED = "removed"


class Reason(StrEnum):
    """Why a membership changed: who asked (api, dashboard) or what did it."""

    API = "api"
    DASHBOARD = "dashboard"
    TTL = "ttl"
    SEGMENT_DELETED = "segment_deleted"
    ROLLOUT = "rollout"
    RESTORED = "restored"  # a deleted segment restored (its members, its rollout)
    RULE = "rule"  # the segment's rules began or stopped covering the user (issue 29)


class RuleCause(StrEnum):
    """What moved a user through a segment's rules (``membership_events.cause`` of a ``rule`` row)."""

    TRAITS = "traits"  # the user's traits changed
    RULES = "rules"  # the segment's rules, percentage or group changed (a re-evaluation reached the user)


class Source(StrEnum):
    """How a user is in a segment right now."""

    EXPLICIT = "explicit"
    ROLLOUT = "rollout"
    RULE = "rule"  # the segment's rules match the user's traits (in its rollout)


class ReportKind(StrEnum):
    USER_HISTORY = "user_history"
    ALL_HISTORY = "all_history"
    SEGMENT_MEMBERS = "segment_members"


class OperationKind(StrEnum):
    """A background bulk operation (``bulk_operations.kind``, at most 20 characters)."""

    BULK_ADD = "bulk_add"
    BULK_REMOVE = "bulk_remove"
    BULK_REPLACE = "bulk_replace"
    DELETE_SEGMENT = "delete_segment"
    RESTORE_SEGMENT = "restore_segment"
    TRAIT_IMPORT = "trait_import"  # of no segment: users' traits from an uploaded file
    REEVALUATE_RULES = "reevaluate_rules"  # a rule segment's users with traits evaluated again


class TraitAction(StrEnum):
    """What a trait history entry records (``trait_events.action``): keys set (added or given
    another value), keys deleted, or every trait of the user removed at once."""

    SET = "set"
    DELETED = "deleted"
    CLEARED = "cleared"


class TraitImportMode(StrEnum):
    """How each line of a trait import is applied (``bulk_operations.mode``)."""

    REPLACE = "replace"  # the line's traits become the user's traits (as PUT)
    MERGE = "merge"  # the line's traits are merged into the user's (as PATCH)


class ReportStatus(StrEnum):
    """The life of a background job's record (reports and bulk operations alike)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class SegmentEventKind(StrEnum):
    """What a segment activity entry records (``segment_events.kind``)."""

    CREATED = "created"
    DESCRIPTION_CHANGED = "description_changed"
    ROLLOUT_CHANGED = "rollout_changed"
    GROUP_CHANGED = "group_changed"
    RULES_CHANGED = "rules_changed"  # rules given, changed or removed (issue 29)
    MEMBERS_ADDED = "members_added"
    MEMBERS_REMOVED = "members_removed"
    MEMBERS_REPLACED = "members_replaced"
    SCHEDULE_ADDED = "schedule_added"
    SCHEDULE_CANCELLED = "schedule_cancelled"
    DELETED = "deleted"
    RESTORED = "restored"
