"""Member exports of rule segments (issue 29, item 4): a segment in rule mode lists its explicit
members *and* the users in through its rules, each once with its source, exactly the users the
reads answer as members; every other segment's export is byte for byte what it was.

The plain segments' expected bytes below were written by the code before this change (the
export of explicit members only), from the same data (:func:`seed_plain`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from webapp.models import BulkOperation
from webapp.models.enums import OperationKind, ReportStatus
from webapp.services.history import reports
from webapp.services.membership import bulk
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.segments.lifecycle import create_segment, update_segment
from webapp.services.traits.users import replace_traits

T0 = datetime(2025, 5, 1, tzinfo=UTC)
AT = datetime(2025, 5, 10, 12, 0, tzinfo=UTC)
BOM = "\ufeff"
APP = [{"conditions": [{"trait": "app", "operator": "semver_gte", "value": "5.2"}]}]


def seed_plain(session) -> None:
    """EXP_PLAIN: a 50% rollout with explicit members (for good, TTL live, TTL ending exactly at
    ``AT``, TTL expired and not purged, a large id); EXP_PEND: a 30% rollout given rules whose
    first evaluation has written its (not yet read) rows but not switched it to rule mode."""
    create_segment(session, "EXP_PLAIN", rollout_percent=50, now=T0)
    change_user_segments(session, 30, [AddSpec("EXP_PLAIN")], now=T0)
    change_user_segments(session, 2**62, [AddSpec("EXP_PLAIN")], now=T0 + timedelta(microseconds=7))
    for uid, expiry in (
        (10, AT + timedelta(microseconds=1)),
        (20, AT),
        (40, AT - timedelta(days=1)),
        (50, AT + timedelta(days=7)),
    ):
        change_user_segments(
            session, uid, [AddSpec("EXP_PLAIN", expires_at=expiry)], now=T0 + timedelta(hours=uid)
        )
    for uid in range(1, 41):
        replace_traits(session, uid, {"app": random.Random(uid).choice(["5.1", "5.2", "6.0"])}, actor="svc")
    create_segment(session, "EXP_PEND", rollout_percent=30, now=T0)
    change_user_segments(session, 3, [AddSpec("EXP_PEND")], now=T0)
    change_user_segments(session, 4, [AddSpec("EXP_PEND", expires_at=AT + timedelta(days=1))], now=T0)
    update_segment(session, "EXP_PEND", rules=APP, actor="pm")
    operation = session.scalars(
        sa.select(BulkOperation).where(
            BulkOperation.kind == OperationKind.REEVALUATE_RULES,
            BulkOperation.status.in_((ReportStatus.QUEUED, ReportStatus.RUNNING)),
        )
    ).one()
    bulk.run_chunk(session, operation)  # every user evaluated (one chunk): rows, not read yet
    assert session.scalar(sa.text("SELECT count(*) FROM rule_matches")) > 0
    session.flush()


def export_bytes(session, slug: str, **fmt) -> bytes:
    report = reports.export_members(session, slug, now=AT, **fmt)
    assert report.status == ReportStatus.FINISHED
    return reports.report_path(report).read_bytes()


# Written by the code before rule members were exported (the explicit members only), for seed_plain.
BEFORE = {
    ("EXP_PLAIN", ""): (
        b"user_id;segment;added_at;expires_at\n"
        b"10;EXP_PLAIN;2025-05-01T10:00:00Z;2025-05-10T12:00:00.000001Z\n"
        b"30;EXP_PLAIN;2025-05-01T00:00:00Z;\n"
        b"50;EXP_PLAIN;2025-05-03T02:00:00Z;2025-05-17T12:00:00Z\n"
        b"4611686018427387904;EXP_PLAIN;2025-05-01T00:00:00.000007Z;\n"
    ),
    ("EXP_PLAIN", ","): (
        b"\xef\xbb\xbfuser_id,segment,source,added_utc,expires_utc\r\n"
        b"10,EXP_PLAIN,ttl,2025-05-01 10:00:00,2025-05-10 12:00:00\r\n"
        b"30,EXP_PLAIN,explicit,2025-05-01 00:00:00,\r\n"
        b"50,EXP_PLAIN,ttl,2025-05-03 02:00:00,2025-05-17 12:00:00\r\n"
        b"4611686018427387904,EXP_PLAIN,explicit,2025-05-01 00:00:00,\r\n"
    ),
    ("EXP_PLAIN", ";"): (
        b"\xef\xbb\xbfuser_id;segment;source;added_utc;expires_utc\r\n"
        b"10;EXP_PLAIN;ttl;2025-05-01 10:00:00;2025-05-10 12:00:00\r\n"
        b"30;EXP_PLAIN;explicit;2025-05-01 00:00:00;\r\n"
        b"50;EXP_PLAIN;ttl;2025-05-03 02:00:00;2025-05-17 12:00:00\r\n"
        b"4611686018427387904;EXP_PLAIN;explicit;2025-05-01 00:00:00;\r\n"
    ),
    ("EXP_PEND", ""): (
        b"user_id;segment;added_at;expires_at\n"
        b"3;EXP_PEND;2025-05-01T00:00:00Z;\n"
        b"4;EXP_PEND;2025-05-01T00:00:00Z;2025-05-11T12:00:00Z\n"
    ),
    ("EXP_PEND", ","): (
        b"\xef\xbb\xbfuser_id,segment,source,added_utc,expires_utc\r\n"
        b"3,EXP_PEND,explicit,2025-05-01 00:00:00,\r\n"
        b"4,EXP_PEND,ttl,2025-05-01 00:00:00,2025-05-11 12:00:00\r\n"
    ),
    ("EXP_PEND", ";"): (
        b"\xef\xbb\xbfuser_id;segment;source;added_utc;expires_utc\r\n"
        b"3;EXP_PEND;explicit;2025-05-01 00:00:00;\r\n"
        b"4;EXP_PEND;ttl;2025-05-01 00:00:00;2025-05-11 12:00:00\r\n"
    ),
}


def test_plain_and_pending_segments_export_byte_for_byte_what_they_did(db_session):
    """A plain segment (its rollout is a share of every id: not listed) and a plain segment whose
    first rules are being evaluated (it still answers by its rollout; its rule rows are not read
    yet) export their explicit members exactly as before, in every format."""
    seed_plain(db_session)
    for (slug, separator), before in BEFORE.items():
        fmt = {"format": "spreadsheet", "separator": separator} if separator else {}
        assert export_bytes(db_session, slug, **fmt) == before, (slug, separator)
