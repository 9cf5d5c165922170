"""Per-user membership changes as webhooks (issue 27, item 2): a subscription that lists
``membership.changed`` receives every change history records — explicit, TTL, bulk, a
deletion's and a restore's — batched up to WEBHOOK_MEMBERSHIP_BATCH changes per delivery, each
change exactly once; the outbox rows are written by the statement writing the history rows.
Deliveries go to the real local receiver, which verifies each with ``standardwebhooks``."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.webhooks import receiver
from webapp.jobs.tasks import purge_expired
from webapp.models.enums import Reason
from webapp.platform.extensions import db
from webapp.services.common import utcnow
from webapp.services.webhooks import catalogue, delivery, outbound, outbox, subscriptions

SETTINGS = delivery.Settings(
    timeout=2, concurrency=8, retry_base=1, retry_max=4, disable_after=3600, lease=5,
    policy=outbound.Policy(allow_loopback=True),
)  # fmt: skip
MEMBERSHIP = [catalogue.MEMBERSHIP_CHANGED]


def subscribe(hooks, path, types):
    sub, secret = subscriptions.create(
        db.session, hooks.url(path), types, policy=SETTINGS.policy, actor="test"
    )
    hooks.secrets[path] = secret
    return sub


def deliver_all():
    """What the delivery job does, in this transaction, until nothing is due."""
    sent = []
    while claims := delivery.claim(db.session, utcnow(), SETTINGS, 16):
        for claim in claims:
            delivery.record(db.session, claim, delivery.send(claim, SETTINGS), utcnow(), SETTINGS)
        sent += claims
    return sent


def changes(hooks, path):
    got = [e for e in hooks.events(path) if e.type == catalogue.MEMBERSHIP_CHANGED]
    for event in got:
        assert event.data["count"] == len(event.data["changes"])
    return [c for e in got for c in e.data["changes"]]


def outbox_rows():
    return db.session.execute(
        text("SELECT (SELECT count(*) FROM webhook_events), (SELECT count(*) FROM webhook_deliveries)")
    ).one()


@pytest.fixture
def wakes(monkeypatch):
    """The sender's wake-ups (after each commit that wrote events), counted instead of queued."""
    calls = []
    monkeypatch.setattr(outbox, "wake", lambda: calls.append(1))
    return calls


def test_explicit_adds_and_removes_reach_opted_in_subscriptions_only(api, db_session, wakes):
    with receiver() as hooks:
        subscribe(hooks, "/members", MEMBERSHIP)
        subscribe(hooks, "/segments", ["segment.created", "bulk_operation.finished"])
        api.segment("HOOK_A")
        api.segment("HOOK_B")
        until = (utcnow() + timedelta(days=2)).replace(microsecond=0)
        wakes.clear()
        added = api.change(7, ["HOOK_A", {"slug": "HOOK_B", "expires_at": until.isoformat()}])
        assert added.status_code == 200 and sorted(added.json["added"]) == ["HOOK_A", "HOOK_B"]
        assert wakes == [1]
        assert api.change(7, delete=["HOOK_A"]).status_code == 200
        assert api.change(7, delete=["HOOK_A"]).status_code in (200, 422)  # not in it: no change, no event
        deliver_all()
        got = changes(hooks, "/members")
        assert [(c["user_id"], c["segment"], c["action"], c["reason"]) for c in got] == [
            (7, "HOOK_A", "added", "api"),
            (7, "HOOK_B", "added", "api"),
            (7, "HOOK_A", "removed", "api"),
        ]
        assert got[1]["expires_at"].startswith(until.isoformat()[:19]) and "expires_at" not in got[0]
        history = api.get("/users/7/history").json["items"]
        assert sorted(h["occurred_at"][:23] for h in history) == sorted(c["occurred_at"][:23] for c in got)
        assert set(got[0]) == {"user_id", "segment", "action", "reason", "occurred_at"}
        assert changes(hooks, "/segments") == []  # not opted in: segment-level events only
        assert {e.type for e in hooks.events("/segments")} == {"segment.created"}
        assert hooks.rejected == []


def test_the_api_and_the_dashboard_offer_it_as_an_opt_in(api, client, db_session):
    from typing import get_args

    from webapp.api.webhooks import EventType

    assert set(get_args(EventType)) == set(catalogue.SELECTABLE)
    made = api.post("/webhooks", {"url": "http://127.0.0.1:9/m", "event_types": ["membership.changed"]})
    assert made.status_code == 201 and made.json["event_types"] == ["membership.changed"]
    assert "membership.changed" in api.get("/webhooks").json["event_types"]
    page = client.get("/webhooks", headers={"X-Forwarded-Email": "pm@example.com"}).get_data(as_text=True)
    boxes = dict(re.findall(r'<input type="checkbox" name="event_types" value="([^"]+)" ?(checked)?>', page))
    assert boxes["membership.changed"] == "" and boxes["segment.created"] == "checked"  # unticked: opt-in


def test_a_ttl_expiry_through_the_purge_is_sent(api, db_session):
    with receiver() as hooks:
        subscribe(hooks, "/members", MEMBERSHIP)
        api.segment("HOOK_TTL")
        assert api.change(11, [{"slug": "HOOK_TTL", "ttl_seconds": 60}]).status_code == 200
        deliver_all()
        assert purge_expired(now=utcnow() + timedelta(minutes=2)) == 1
        deliver_all()
        added, expired = changes(hooks, "/members")
        assert (added["action"], expired["action"], expired["reason"]) == ("added", "removed", "ttl")
        assert expired["user_id"] == 11 and expired["occurred_at"] == expired["expires_at"]
        assert hooks.rejected == []


def test_a_bulk_add_is_batched_each_change_exactly_once(app, api, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_MEMBERSHIP_BATCH", 1000)
    with receiver() as hooks:
        subscribe(hooks, "/members", MEMBERSHIP)
        subscribe(hooks, "/other", ["bulk_operation.finished"])
        api.segment("HOOK_BULK")
        ids = list(range(1, 2501))
        assert api.post("/segments/HOOK_BULK/members", {"user_ids": ids}).status_code == 200
        sent = deliver_all()
        batches = [e for e in hooks.events("/members") if e.type == catalogue.MEMBERSHIP_CHANGED]
        assert sorted(e.data["count"] for e in batches) == [500, 1000, 1000]
        assert len({e.msg_id for e in batches}) == 3
        got = changes(hooks, "/members")
        assert Counter(c["user_id"] for c in got) == Counter(ids)  # each exactly once
        assert {(c["segment"], c["action"], c["reason"]) for c in got} == {("HOOK_BULK", "added", "api")}
        assert len(sent) == 3 + 1  # three batches to /members, the operation's event to /other
        assert changes(hooks, "/other") == []
        # a redelivery carries the same webhook-id and the same changes
        assert deliver_all() == []
        assert hooks.rejected == []


def test_deletion_and_restore_members_are_sent(api, db_session):
    with receiver() as hooks:
        subscribe(hooks, "/members", MEMBERSHIP)
        api.segment("HOOK_DEL")
        assert api.post("/segments/HOOK_DEL/members", {"user_ids": [1, 2]}).status_code == 200
        assert api.delete("/segments/HOOK_DEL").status_code == 200
        assert api.post("/segments/HOOK_DEL/restore").status_code in (200, 202)
        deliver_all()
        got = [(c["user_id"], c["action"], c["reason"]) for c in changes(hooks, "/members")]
        assert sorted(got) == sorted(
            [(u, "added", "api") for u in (1, 2)]
            + [(u, "removed", "segment_deleted") for u in (1, 2)]
            + [(u, "added", "restored") for u in (1, 2)]
        )


def test_without_an_opted_in_subscription_no_outbox_row_is_written(api, db_session, wakes):
    api.segment("QUIET")
    assert api.post("/segments/QUIET/members", {"user_ids": list(range(1, 1001))}).status_code == 200
    assert api.change(5, [{"slug": "QUIET", "ttl_seconds": 60}]).status_code == 200
    assert purge_expired(now=utcnow() + timedelta(minutes=2)) >= 1
    assert outbox_rows() == (0, 0) and wakes == []
    hooks_url = "http://127.0.0.1:9/segments"
    subscriptions.create(db.session, hooks_url, ["segment.deleted"], policy=SETTINGS.policy)  # other events
    assert api.change(6, ["QUIET"]).status_code == 200
    assert api.post("/segments/QUIET/members", {"user_ids": [8, 9]}).status_code == 200
    assert outbox_rows() == (0, 0) and wakes == []


def test_a_change_rolled_back_leaves_no_membership_event(app, db_session):
    from webapp.services.membership import store
    from webapp.services.segments import lifecycle

    subscriptions.create(db.session, "http://127.0.0.1:9/m", MEMBERSHIP, policy=SETTINGS.policy)
    segment = lifecycle.create_segment(db.session, "ROLLED_BACK")
    with pytest.raises(RuntimeError), db.session.begin_nested():
        store.upsert_many(db.session, [1, 2, 3], segment.id, "ROLLED_BACK", None, utcnow(), Reason.API, "t")
        assert outbox_rows() == (1, 1)
        raise RuntimeError("the change fails after its events were written")
    assert outbox_rows() == (0, 0)
