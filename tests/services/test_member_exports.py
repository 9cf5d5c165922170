"""Member exports of rule segments (issue 29, item 4): a segment in rule mode lists its explicit
members *and* the users in through its rules, each once with its source, exactly the users the
reads answer as members; every other segment's export is byte for byte what it was.

The plain segments' expected bytes below were written by the code before this change (the
export of explicit members only), from the same data (:func:`seed_plain`)."""

from __future__ import annotations

import csv
import io
import random
import tracemalloc
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tests.services.test_rule_segments import run_operations
from webapp.models import BulkOperation
from webapp.models.enums import OperationKind, ReportStatus
from webapp.services.history import reports
from webapp.services.membership import bulk
from webapp.services.membership.user_changes import AddSpec, change_user_segments
from webapp.services.reads.path import active_segments, lookup
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


# -- a segment in rule mode --------------------------------------------------------------------

RULE = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]


def answered(session, slug: str, users: list[int], now: datetime) -> dict[int, tuple[str, datetime | None]]:
    """The users the reads answer as members of ``slug`` at ``now``: (source, expiry) each; the
    batch lookup and the single read agree (asserted)."""
    batch = {
        u: {(a.source.value, a.expires_at) for a in answer if a.slug == slug}
        for u, answer in zip(users, lookup(session, users, now=now).answers(), strict=True)
    }
    for u in users:
        single = {
            (a.source.value, a.expires_at) for a in active_segments(session, u, now=now) if a.slug == slug
        }
        assert single == batch[u], (u, single, batch[u])
    assert all(len(found) <= 1 for found in batch.values())
    return {u: next(iter(found)) for u, found in batch.items() if found}


def seed_rule_segment(session, now: datetime) -> dict[str, int]:
    """R_EXP: a 70% rule segment (plan = paid) in group EXG beside a plain O_EXP, with every
    case the membership rule decides; returns the users of each case by name."""
    past = now - timedelta(days=2)
    for uid in range(1, 121):
        replace_traits(session, uid, {"plan": "paid" if uid % 3 else "free"}, actor="svc")

    def add(uid: int, slug: str, expiry: datetime | None = None) -> None:
        change_user_segments(session, uid, [AddSpec(slug, expires_at=expiry)], now=past, actor="api")

    create_segment(session, "O_EXP", rollout_percent=10, exclusion_group="EXG", now=past)
    # explicit members of O_EXP before R_EXP's rules are evaluated (after, the group's one
    # explicit segment is refused to a user R_EXP's rules put in it): some will rule-match
    holding = [u for u in range(1, 41) if u % 3][:20]
    for i, uid in enumerate(holding):
        add(uid, "O_EXP", now - timedelta(minutes=1) if i % 2 else None)
    create_segment(session, "R_EXP", rules=RULE, rollout_percent=70, exclusion_group="EXG", actor="pm")
    run_operations(session)
    matched = list(
        session.scalars(
            sa.text(
                "SELECT r.user_id FROM rule_matches r JOIN segments s ON s.id = r.segment_id "
                "WHERE s.slug = 'R_EXP' ORDER BY 1"
            )
        )
    )
    assert len(matched) > 30
    free = [u for u in matched if u not in holding]
    cases = {
        "explicit_and_matched": free[0],  # listed once, as explicit
        "ttl_live_and_matched": free[1],  # explicit until its expiry
        "ttl_expired_and_matched": free[2],  # the TTL ran out (not purged): in through the rule
        "ttl_ends_now_and_matched": free[3],  # expiry == now, exclusive: in through the rule
        "excluded": free[4],  # removed through the API while covered: a rollout exclusion
        "held": next(u for i, u in enumerate(holding) if u in matched and not i % 2),  # holds the group
        "held_expired": next(u for i, u in enumerate(holding) if u in matched and i % 2),  # TTL ran out
        "explicit_no_traits": 1_000,  # explicit, no traits at all
        "ttl_no_traits": 1_001,
        "expired_no_traits": 1_002,  # out
    }
    add(cases["explicit_and_matched"], "R_EXP")
    add(cases["ttl_live_and_matched"], "R_EXP", now + timedelta(days=1))
    add(cases["ttl_expired_and_matched"], "R_EXP", now - timedelta(hours=1))
    add(cases["ttl_ends_now_and_matched"], "R_EXP", now)
    change_user_segments(session, cases["excluded"], [], ["R_EXP"], now=past, actor="api")
    add(cases["explicit_no_traits"], "R_EXP")
    add(cases["ttl_no_traits"], "R_EXP", now + timedelta(hours=3))
    add(cases["expired_no_traits"], "R_EXP", now - timedelta(days=1))
    session.flush()
    return cases


def parsed(data: bytes, separator: str = ";") -> list[list[str]]:
    text = data.decode("utf-8")
    return list(csv.reader(io.StringIO(text.removeprefix(BOM), newline=""), delimiter=separator))


def test_a_rule_segment_exports_exactly_the_members_the_reads_answer(db_session):
    """The oracle: explicit members (for good, TTL, expired, without traits), rule members, a
    rollout exclusion, a rule member held by an explicit member of another segment of the group:
    the export is the set of users the batch lookup and the single read answer as members, each
    once, with the source they answer (explicit with its expiry, or rule)."""
    now = datetime.now(UTC) + timedelta(minutes=30)
    cases = seed_rule_segment(db_session, now)
    users = sorted({*range(1, 121), *cases.values()})
    want = answered(db_session, "R_EXP", users, now)
    by_rules = {u for u, (source, _) in want.items() if source == "rule"}
    assert by_rules and len(want) > len(by_rules)  # both kinds are in
    # the cases as the membership rule decides them (so the oracle is not vacuous)
    assert want[cases["explicit_and_matched"]] == ("explicit", None)
    assert want[cases["ttl_live_and_matched"]] == ("explicit", now + timedelta(days=1))
    assert want[cases["ttl_expired_and_matched"]][0] == want[cases["ttl_ends_now_and_matched"]][0] == "rule"
    assert want[cases["held_expired"]][0] == "rule"
    assert (
        cases["excluded"] not in want and cases["held"] not in want and cases["expired_no_traits"] not in want
    )

    report = reports.export_members(db_session, "R_EXP", now=now)
    data = reports.report_path(report).read_bytes()
    rows = parsed(data)
    assert rows[0] == ["user_id", "segment", "added_at", "expires_at", "source"]
    assert data.startswith(b"user_id;segment;added_at;expires_at;source\n") and b"\r" not in data
    listed = [int(r[0]) for r in rows[1:]]
    assert listed == sorted(set(listed)), "each user once, by id"
    assert report.rows == len(listed)
    got = {
        int(u): (source, datetime.fromisoformat(expires) if expires else None)
        for u, slug, added, expires, source in rows[1:]
    }
    assert got == want
    for u, slug, added, _, source in rows[1:]:
        assert slug == "R_EXP" and (added != "") == (source == "explicit"), (u, added, source)

    # the spreadsheet format: its own columns, source explicit / ttl / rule
    sheet = reports.export_members(db_session, "R_EXP", format="spreadsheet", separator=",", now=now)
    rows = parsed(reports.report_path(sheet).read_bytes(), ",")
    assert rows[0] == list(reports.SHEET_MEMBERS_HEADER)
    sources = {int(r[0]): r[2] for r in rows[1:]}
    assert len(sources) == len(rows) - 1
    assert sources == {
        u: "rule" if source == "rule" else "ttl" if expiry else "explicit"
        for u, (source, expiry) in want.items()
    }

    # a queued export (a large segment) is written by the same writer, with the same rows
    db_session.execute(sa.text("UPDATE reports SET status = 'finished'"))  # (not pending: a new one)
    small = reports.EXPORT_IN_REQUEST
    try:
        reports.EXPORT_IN_REQUEST = len(want) - 1
        queued = reports.export_members(db_session, "R_EXP", now=now)
    finally:
        reports.EXPORT_IN_REQUEST = small
    assert queued.status == ReportStatus.QUEUED
    count, path = reports.write_csv(db_session, queued, lambda done, total: None, now=now)
    assert path.read_bytes() == data and count == len(want)


def test_a_rule_segment_whose_rules_are_removed_exports_as_a_plain_one_again(db_session):
    now = datetime.now(UTC) + timedelta(minutes=30)
    cases = seed_rule_segment(db_session, now)
    update_segment(db_session, "R_EXP", rules=None, actor="pm")  # back to its rollout at once
    data = reports.report_path(reports.export_members(db_session, "R_EXP", now=now)).read_bytes()
    rows = parsed(data)
    assert rows[0] == list(reports.MEMBERS_HEADER)  # the plain segment's four columns
    explicit = {
        u
        for u, (source, _) in answered(db_session, "R_EXP", sorted(cases.values()), now).items()
        if source == "explicit"
    }
    assert {int(r[0]) for r in rows[1:]} == explicit
    assert cases["explicit_no_traits"] in explicit


def test_a_rule_segments_export_streams(db_session):
    """Its rule members stream too (COPY, block by block): 4 times the members, not 4 times the
    memory."""
    segment = create_segment(db_session, "R_STREAM", rules=RULE, actor="pm")
    db_session.flush()
    assert segment.rule_mode

    def peak(count: int) -> int:
        db_session.execute(sa.text("DELETE FROM rule_matches WHERE segment_id = :s"), {"s": segment.id})
        db_session.execute(
            sa.text(
                "INSERT INTO rule_matches (user_id, segment_id, since) SELECT g, :s, now() FROM generate_series(1, :n) g"
            ),
            {"s": segment.id, "n": count},
        )
        report = reports.request_report(db_session, kind="segment_members", segment="R_STREAM")
        tracemalloc.start()
        rows, _ = reports.write_csv(db_session, report, lambda done, total: None)
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report.status = ReportStatus.FINISHED
        db_session.flush()
        assert rows == count
        return used

    small, large = peak(20_000), peak(80_000)
    print(f"peak {small:,} B for 20,000 rule members, {large:,} B for 80,000")
    assert large < small * 1.25, (small, large)
