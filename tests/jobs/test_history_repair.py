"""`flask history repair`: rows stored before the one membership rule that moved nothing."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from webapp.models import MembershipEvent
from webapp.platform.extensions import db
from webapp.services.common import utcnow


def _visible(slug: str) -> list[tuple[int, str, str, bool]]:
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(
                MembershipEvent.user_id,
                MembershipEvent.action,
                MembershipEvent.reason,
                MembershipEvent.visible,
            )
            .where(MembershipEvent.segment_slug == slug)
            .order_by(MembershipEvent.occurred_at, MembershipEvent.id)
        )
    ]


def _old_row(segment_id: int, slug: str, action: str, at, user_id: int = 7) -> None:
    """A row as the code before the one rule wrote it (always visible)."""
    db.session.add(
        MembershipEvent(
            user_id=user_id,
            segment_id=segment_id,
            segment_slug=slug,
            action=action,
            reason="api",
            occurred_at=at,
            actor="api",
            visible=True,
        )
    )
    db.session.commit()


def test_repair_hides_doubled_rows_dry_run_first(redis_app, committed_db):
    client = redis_app.test_client()
    segment = client.post("/api/v1/segments", json={"slug": "REPAIR_R", "rollout_percent": 100}).json
    assert segment["rollout_percent"] == 100
    seg_id = db.session.scalar(sa.text("SELECT id FROM segments WHERE slug = 'REPAIR_R'"))
    start = utcnow()
    # Written by the old code: an explicit add of a rollout member (the user was in already),
    # and a doubled removal 1 ms after the real one.
    _old_row(seg_id, "REPAIR_R", "added", start + timedelta(seconds=1))
    _old_row(seg_id, "REPAIR_R", "removed", start + timedelta(seconds=2))
    _old_row(seg_id, "REPAIR_R", "removed", start + timedelta(seconds=2, milliseconds=1))
    history = client.get("/api/v1/users/7/history").json["items"]
    assert [(e["operation"], e["reason"]) for e in history] == [("added", "rollout"), ("removed", "api")]

    runner = redis_app.test_cli_runner()
    dry = runner.invoke(args=["history", "repair"])
    assert dry.exit_code == 0, dry.output
    assert "would make 2 doubled rows invisible" in dry.output and "dry run" in dry.output
    assert [v for *_, v in _visible("REPAIR_R")] == [True, True, True]  # nothing written

    applied = runner.invoke(args=["history", "repair", "--apply"])
    assert applied.exit_code == 0 and "made 2 doubled rows invisible" in applied.output
    assert [v for *_, v in _visible("REPAIR_R")] == [False, True, False]
    # The user's history is what it was; the rows left visible are the ones that moved something.
    assert client.get("/api/v1/users/7/history").json["items"] == history
    again = runner.invoke(args=["history", "repair", "--apply"])
    assert "made 0 doubled rows invisible and 0 visible again" in again.output
