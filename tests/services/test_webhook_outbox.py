"""Webhooks' outbox and delivery rules (issue 27): the event is written in the changing
transaction (or not at all), each delivery is claimed by one sender at a time within the
subscription's concurrency, retried with the same webhook-id, and a subscription failing for
the configured period is disabled, saying so. Deliveries here go to a real local receiver that
verifies every signature with the ``standardwebhooks`` package."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.webhooks import receiver
from webapp.platform.extensions import db
from webapp.services.common import utcnow
from webapp.services.segments import lifecycle
from webapp.services.webhooks import catalogue, delivery, outbound, subscriptions

ALL = [t for t in catalogue.SELECTABLE if t != catalogue.MEMBERSHIP_CHANGED]  # segment-level events
SETTINGS = delivery.Settings(
    timeout=2,
    concurrency=2,
    retry_base=1,
    retry_max=4,
    disable_after=3600,
    lease=5,
    policy=outbound.Policy(allow_loopback=True),
)


def subscribe(url="http://127.0.0.1:9/hook", types=ALL):
    return subscriptions.create(db.session, url, types, policy=SETTINGS.policy, actor="test")


def events():
    return db.session.execute(text("SELECT type, payload FROM webhook_events ORDER BY id")).all()


def deliveries(sub):
    return db.session.execute(
        text("SELECT state, attempts FROM webhook_deliveries WHERE subscription_id = :s ORDER BY id"),
        {"s": sub.id},
    ).all()


def test_every_segment_change_writes_its_event_and_deliveries_in_its_transaction(api, db_session):
    sub, secret = subscribe()
    only_created, _ = subscribe(types=["segment.created"])
    assert secret.startswith("whsec_")
    api.segment("HOOKED", description="one")
    assert api.patch("/segments/HOOKED", {"rollout_percent": 25}).status_code == 200
    assert api.patch("/segments/HOOKED", {"description": "two"}).status_code == 200
    assert api.post("/segments/HOOKED/members", {"user_ids": [1, 2, 3]}).status_code == 200
    assert api.delete("/segments/HOOKED").status_code == 200
    kinds = [(t, p["data"].get("change") or p["data"].get("operation")) for t, p in events()]
    assert kinds == [
        ("segment.created", None),
        ("segment.changed", "rollout"),
        ("segment.changed", "description"),
        ("bulk_operation.finished", "add"),
        ("segment.deleted", None),
    ]
    changed = events()[1].payload
    assert changed["data"]["from_percent"] == 0 and changed["data"]["to_percent"] == 25
    assert events()[3].payload["data"]["received"] == 3  # (count: those added, the rollout aside)
    assert len(deliveries(sub)) == 5 and len(deliveries(only_created)) == 1
    assert all(state == "pending" for state, _ in deliveries(sub))


def test_a_change_rolled_back_leaves_no_event(db_session):
    subscribe()
    with pytest.raises(RuntimeError), db.session.begin_nested():
        lifecycle.create_segment(db.session, "NEVER")
        assert len(events()) == 1
        raise RuntimeError("the change fails after its event was written")
    assert events() == []
    assert db.session.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar() == 0


def _deliver_due(now=None):
    """What the delivery job does, in this transaction: claim, send, record."""
    claims = delivery.claim(db.session, now or utcnow(), SETTINGS, 16)
    for claim in claims:
        delivery.record(db.session, claim, delivery.send(claim, SETTINGS), now or utcnow(), SETTINGS)
    return claims


def test_delivered_signed_and_retried_with_the_same_id(db_session):
    with receiver() as hooks:
        sub, secret = subscribe(hooks.url("/a"))
        hooks.secrets["/a"] = secret
        hooks.down.add("/a")
        lifecycle.create_segment(db.session, "RETRIED")
        (first,) = _deliver_due()
        assert deliveries(sub) == [("pending", 1)] and hooks.ids() == []
        row = db.session.execute(text("SELECT last_status, next_attempt_at FROM webhook_deliveries")).one()
        assert row.last_status == 503 and row.next_attempt_at > utcnow()
        assert _deliver_due() == []  # not due yet: backoff
        hooks.down.clear()
        (second,) = _deliver_due(utcnow() + timedelta(seconds=5))
        assert deliveries(sub) == [("delivered", 2)]
        assert first.msg_id == second.msg_id == hooks.ids()[0]
        (got,) = hooks.events("/a")
        assert got.type == "segment.created" and got.data["segment"] == "RETRIED"
        assert hooks.rejected == []
        failing = db.session.execute(text("SELECT failing_since FROM webhook_subscriptions")).scalar()
        assert failing is None


def test_claims_respect_each_subscriptions_concurrency(db_session):
    busy, _ = subscribe("http://127.0.0.1:9/busy")
    other, _ = subscribe("http://127.0.0.1:9/other", ["segment.deleted"])
    for n in range(5):
        lifecycle.create_segment(db.session, f"MANY_{n}")
    claims = delivery.claim(db.session, utcnow(), SETTINGS, 16)
    assert [c.subscription_id for c in claims] == [busy.id, busy.id]  # 2 in flight at most
    assert delivery.claim(db.session, utcnow(), SETTINGS, 16) == []  # still leased
    # a lease that ran out (its sender died) is claimed again, same id, attempt 2
    later = delivery.claim(db.session, utcnow() + timedelta(seconds=6), SETTINGS, 16)
    assert {c.msg_id for c in later} >= {c.msg_id for c in claims}
    assert {c.attempt for c in later if c.msg_id in {x.msg_id for x in claims}} == {2}
    assert other.id not in {c.subscription_id for c in later}  # it wants no creations


def test_failing_for_the_configured_period_disables_and_says_so(db_session):
    sub, _ = subscribe("http://127.0.0.1:9/dead")  # nothing listens on port 9
    lifecycle.create_segment(db.session, "UNHEARD")
    start = utcnow()
    (claim,) = delivery.claim(db.session, start, SETTINGS, 16)
    failed = delivery.Outcome(None, "ConnectionRefusedError: refused", 0.001)
    delivery.record(db.session, claim, failed, start, SETTINGS)
    db.session.refresh(sub)
    assert sub.status == "active" and sub.failing_since == start
    later = start + timedelta(seconds=SETTINGS.disable_after + 1)
    (claim,) = delivery.claim(db.session, later, SETTINGS, 16)
    delivery.record(db.session, claim, failed, later, SETTINGS)
    db.session.refresh(sub)
    assert sub.status == "disabled"
    assert (
        "every delivery failed since" in sub.disabled_reason
        and "ConnectionRefusedError" in sub.disabled_reason
    )
    assert delivery.claim(db.session, later + timedelta(hours=2), SETTINGS, 16) == []
    lifecycle.create_segment(db.session, "WHILE_DISABLED")  # a disabled subscription gets no new events
    assert len(deliveries(sub)) == 1
    subscriptions.resume(db.session, sub.id)
    db.session.refresh(sub)
    assert sub.status == "active" and sub.failing_since is None and sub.disabled_reason is None
    assert len(delivery.claim(db.session, utcnow(), SETTINGS, 16)) == 1  # the kept delivery, due again


def test_paused_subscriptions_keep_their_events_for_later(db_session):
    with receiver() as hooks:
        sub, secret = subscribe(hooks.url("/p"))
        hooks.secrets["/p"] = secret
        subscriptions.pause(db.session, sub.id)
        lifecycle.create_segment(db.session, "WHILE_PAUSED")
        assert _deliver_due() == [] and deliveries(sub) == [("pending", 0)]
        subscriptions.resume(db.session, sub.id)
        assert len(_deliver_due()) == 1
        assert [e.data["segment"] for e in hooks.events()] == ["WHILE_PAUSED"]


def test_rotation_signs_with_both_secrets_for_a_while(db_session):
    with receiver() as hooks:
        sub, old = subscribe(hooks.url("/r"))
        _, new = subscriptions.rotate(db.session, sub.id)
        assert new != old
        hooks.secrets["/r"] = old  # a receiver not yet switched still verifies
        lifecycle.create_segment(db.session, "ROTATED_1")
        _deliver_due()
        hooks.secrets["/r"] = new
        lifecycle.create_segment(db.session, "ROTATED_2")
        _deliver_due()
        assert len(hooks.events("/r")) == 2 and hooks.rejected == []


def test_the_nightly_purge_forgets_delivered_events_only(db_session):
    from webapp.services.webhooks import outbox

    sub, _ = subscribe()
    lifecycle.create_segment(db.session, "OLD_DELIVERED")
    lifecycle.create_segment(db.session, "OLD_PENDING")
    first = db.session.execute(text("SELECT min(id) FROM webhook_deliveries")).scalar()
    db.session.execute(
        text("UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now() WHERE id = :id"),
        {"id": first},
    )
    assert outbox.purge_delivered(db.session, utcnow() + timedelta(days=1)) == 1
    assert deliveries(sub) == [("pending", 0)]  # the undelivered one stays: never lost
    assert [p["data"]["segment"] for _, p in events()] == ["OLD_PENDING"]


def test_without_a_subscriber_nothing_is_written_nor_woken(db_session):
    from webapp.http.transaction import _KEY as AFTER_COMMIT

    db.session.info.pop(AFTER_COMMIT, None)
    lifecycle.create_segment(db.session, "UNWATCHED")
    assert events() == []
    assert not any(getattr(c, "__name__", "") == "wake" for c in db.session.info.get(AFTER_COMMIT, []))
    subscribe(types=["segment.deleted"])  # wants other events only
    lifecycle.create_segment(db.session, "STILL_UNWATCHED")
    assert events() == []
