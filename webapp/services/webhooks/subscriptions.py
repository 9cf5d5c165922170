"""Webhook subscriptions: created with a secret shown once, rotated (the old secret keeps
signing beside the new one for a day), paused and resumed (a resumed or re-enabled subscription
gets what it missed: its deliveries were kept), deleted; their last deliveries and redelivering
one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text, update

from webapp.errors import NotFound, ValidationFailed, detail
from webapp.http.transaction import after_commit
from webapp.models import WebhookDelivery, WebhookEvent, WebhookSubscription
from webapp.services.common import DbSession, description_or_error, utcnow
from webapp.services.webhooks import catalogue, outbound, outbox, signing

ROTATION_OVERLAP = timedelta(days=1)
MAX_URL = 2000
MAX_DESCRIPTION = 200
MAX_SUBSCRIPTIONS = 100
STATUSES = ("active", "paused", "disabled")


@dataclass(frozen=True)
class DeliveryView:
    id: int
    msg_id: str
    event_type: str
    state: str
    attempts: int
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_duration_ms: int | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


def _url_or_error(url: object, policy: outbound.Policy) -> str:
    if (
        not isinstance(url, str)
        or not url.strip()
        or len(url) > MAX_URL
        or any(not ("\x21" <= c <= "\x7e") for c in url.strip())
    ):
        raise ValidationFailed(
            "url must be an http(s) URL of at most 2000 characters",
            [detail("url", "must be an http(s) URL of at most 2000 characters", code="invalid_webhook_url")],
        )
    url = url.strip()
    try:
        outbound.check_literal(url, policy)
    except outbound.Refused as exc:
        raise ValidationFailed(
            f"url refused: {exc}",
            [detail("url", f"refused: {exc}", code="webhook_url_refused", value=url[:200], reason=exc.kind)],
        ) from None
    return url


def _types_or_error(event_types: object) -> list[str]:
    if (
        not isinstance(event_types, list | tuple)
        or not event_types
        or any(not isinstance(t, str) or t not in catalogue.EVENT_TYPES for t in event_types)
    ):
        raise ValidationFailed(
            "event_types must list at least one of " + ", ".join(catalogue.SELECTABLE),
            [
                detail(
                    "event_types",
                    "must list at least one of " + ", ".join(catalogue.SELECTABLE),
                    code="unknown_event_type",
                    allowed=list(catalogue.SELECTABLE),
                )
            ],
        )
    return sorted(set(event_types))


def create(
    session: DbSession,
    url: object,
    event_types: object,
    *,
    description: object = "",
    policy: outbound.Policy,
    actor: str = "",
    now: datetime | None = None,
) -> tuple[WebhookSubscription, str]:
    """A new active subscription and its secret (shown this once)."""
    now = now or utcnow()
    checked_url = _url_or_error(url, policy)
    types = _types_or_error(event_types)
    text_ = description_or_error(description, MAX_DESCRIPTION)
    count = session.scalar(select(text("count(*)")).select_from(WebhookSubscription)) or 0
    if count >= MAX_SUBSCRIPTIONS:
        raise ValidationFailed(
            f"at most {MAX_SUBSCRIPTIONS} subscriptions",
            [detail("url", "too many subscriptions", code="too_many_subscriptions", limit=MAX_SUBSCRIPTIONS)],
        )
    secret = signing.new_secret()
    subscription = WebhookSubscription(
        url=checked_url,
        description=text_,
        event_types=types,
        secret=secret,
        status="active",
        created_by=actor[:100],
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    session.flush()
    return subscription, secret


MAX_ID = 2**31 - 1


def get(session: DbSession, subscription_id: int, *, lock: bool = False) -> WebhookSubscription:
    found = None
    if 1 <= subscription_id <= MAX_ID:
        stmt = select(WebhookSubscription).where(WebhookSubscription.id == subscription_id)
        found = session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise NotFound(
            f"webhook subscription {subscription_id} does not exist",
            [detail("id", "no such subscription", code="unknown_subscription", value=subscription_id)],
        )
    return found


def list_all(session: DbSession) -> list[WebhookSubscription]:
    return list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))


def update_subscription(
    session: DbSession,
    subscription_id: int,
    *,
    url: object = None,
    event_types: object = None,
    description: object = None,
    policy: outbound.Policy,
    now: datetime | None = None,
) -> WebhookSubscription:
    new_url = None if url is None else _url_or_error(url, policy)
    new_types = None if event_types is None else _types_or_error(event_types)
    new_description = None if description is None else description_or_error(description, MAX_DESCRIPTION)
    subscription = get(session, subscription_id, lock=True)
    if new_url is not None:
        subscription.url = new_url
    if new_types is not None:
        subscription.event_types = new_types
    if new_description is not None:
        subscription.description = new_description
    subscription.updated_at = now or utcnow()
    session.flush()
    return subscription


def rotate(
    session: DbSession, subscription_id: int, now: datetime | None = None
) -> tuple[WebhookSubscription, str]:
    """A new secret (returned, shown once); the old one also signs for ROTATION_OVERLAP."""
    now = now or utcnow()
    subscription = get(session, subscription_id, lock=True)
    secret = signing.new_secret()
    subscription.previous_secret, subscription.previous_secret_until = (
        subscription.secret,
        now + ROTATION_OVERLAP,
    )
    subscription.secret, subscription.updated_at = secret, now
    session.flush()
    return subscription, secret


def pause(session: DbSession, subscription_id: int, now: datetime | None = None) -> WebhookSubscription:
    """Stop sending (events still queue up for it, delivered once resumed)."""
    subscription = get(session, subscription_id, lock=True)
    if subscription.status == "active":
        subscription.status, subscription.updated_at = "paused", now or utcnow()
    session.flush()
    return subscription


def resume(session: DbSession, subscription_id: int, now: datetime | None = None) -> WebhookSubscription:
    """Active again (also after being disabled): what waited is sent now."""
    now = now or utcnow()
    subscription = get(session, subscription_id, lock=True)
    subscription.status, subscription.disabled_reason, subscription.failing_since = "active", None, None
    subscription.updated_at = now
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription.id, WebhookDelivery.state == "pending")
        .values(next_attempt_at=now)
    )
    session.flush()
    after_commit(outbox.wake)
    return subscription


def remove(session: DbSession, subscription_id: int) -> None:
    subscription = get(session, subscription_id, lock=True)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id))
    session.delete(subscription)
    session.flush()


def deliveries(
    session: DbSession, subscription_id: int, *, limit: int = 20, only: int | None = None
) -> list[DeliveryView]:
    """The subscription's latest deliveries, newest first (``only``: that one)."""
    get(session, subscription_id)
    stmt = (
        select(WebhookDelivery, WebhookEvent.msg_id, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.subscription_id == subscription_id)
    )
    if only is not None:
        stmt = stmt.where(WebhookDelivery.id == only)
    rows = session.execute(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    return [
        DeliveryView(
            id=d.id,
            msg_id=msg_id,
            event_type=event_type,
            state=d.state,
            attempts=d.attempts,
            last_attempt_at=d.last_attempt_at,
            last_status=d.last_status,
            last_error=d.last_error,
            last_duration_ms=d.last_duration_ms,
            next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
        )
        for d, msg_id, event_type in rows
    ]


def redeliver(
    session: DbSession, subscription_id: int, delivery_id: int, now: datetime | None = None
) -> WebhookDelivery:
    """Send a delivery again now (same webhook-id: the receiver can tell it is the same event)."""
    get(session, subscription_id)
    found = (
        session.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == subscription_id)
            .with_for_update()
        )
        if 1 <= delivery_id < 2**63
        else None
    )
    if found is None:
        raise NotFound(
            f"delivery {delivery_id} of subscription {subscription_id} does not exist",
            [detail("delivery_id", "no such delivery", code="unknown_delivery", value=delivery_id)],
        )
    if found.state != "sending":
        found.state, found.next_attempt_at, found.lease_until = "pending", now or utcnow(), None
    session.flush()
    after_commit(outbox.wake)
    return found


def send_test(session: DbSession, subscription_id: int, actor: str = "") -> str:
    """Queue a ``webhook.test`` event to this subscription alone; its webhook-id."""
    subscription = get(session, subscription_id)
    return outbox.emit(
        session,
        catalogue.PING,
        {"subscription": subscription.id, "actor": actor},
        only_subscription=subscription.id,
    )


def counts(session: DbSession, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """{subscription id: {state: deliveries}}."""
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    for sub, state, n in session.execute(
        select(WebhookDelivery.subscription_id, WebhookDelivery.state, text("count(*)"))
        .where(WebhookDelivery.subscription_id.in_(list(ids)))
        .group_by(WebhookDelivery.subscription_id, WebhookDelivery.state)
    ).all():
        out[sub][state] = n
    return out
