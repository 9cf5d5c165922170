"""SQLAlchemy models; importing this package registers every table on db.metadata."""
from webapp.models.bulk_operation import BulkOperation, BulkOperationId
from webapp.models.history import MembershipEvent
from webapp.models.job_run import JobRun
from webapp.models.membership import Membership, RolloutExclusion
from webapp.models.report import Report
from webapp.models.segment import CatalogVersion, RolloutChange, Segment

__all__ = ["BulkOperation", "BulkOperationId", "CatalogVersion", "JobRun", "MembershipEvent", "Membership", "RolloutExclusion", "Report", "RolloutChange", "Segment"]
