"""SQLAlchemy models; importing this package registers every table on db.metadata."""

from webapp.models.bulk_operation import BulkOperation, BulkOperationId
from webapp.models.history import MembershipEvent
from webapp.models.job_run import JobRun
from webapp.models.membership import Membership, RolloutExclusion
from webapp.models.report import Report
from webapp.models.segment import (
    CatalogVersion,
    ExclusionGroup,
    RetiredMembership,
    RolloutChange,
    RolloutSchedule,
    Segment,
    SegmentEvent,
)
from webapp.models.traits import TraitEvent, TraitKey, UserTraits
from webapp.models.webhook import WebhookDelivery, WebhookEvent, WebhookSubscription

__all__ = [
    "BulkOperation",
    "BulkOperationId",
    "CatalogVersion",
    "ExclusionGroup",
    "JobRun",
    "MembershipEvent",
    "Membership",
    "RolloutExclusion",
    "Report",
    "RetiredMembership",
    "RolloutChange",
    "RolloutSchedule",
    "Segment",
    "SegmentEvent",
    "TraitEvent",
    "TraitKey",
    "UserTraits",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSubscription",
]
