"""/api/v1/webhooks: webhook subscriptions (issue 27, docs/webhooks.md). Every route needs a
``write`` token, reads included (a subscription's URL and deliveries are an administrator's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from flask import current_app, url_for
from pydantic import BaseModel, Field, StrictInt, StrictStr, WithJsonSchema

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import actor, json_body, out
from webapp.api.schemas import NO_NUL_PATTERN, Strict
from webapp.http.auth import WRITE, requires_scope
from webapp.http.transaction import transactional
from webapp.models import WebhookSubscription
from webapp.platform.extensions import db
from webapp.services.webhooks import catalogue, delivery, subscriptions

TAGS = ("webhooks",)
EventType = Literal[
    "segment.created",
    "segment.changed",
    "segment.deleted",
    "segment.restored",
    "schedule.applied",
    "bulk_operation.finished",
    "report.finished",
    "membership.changed",  # opt-in: per-user changes, batched
]


URL_PATTERN = r"^https?://[\x21-\x7e]+$"  # printable ASCII (an IDN host: its xn-- form)
URL_HELP = (
    "http(s) URL receiving POSTed events; private, loopback and link-local destinations are "
    "refused (422 webhook_url_refused), also when its name resolves to one at delivery time"
)


WebhookDescription = Annotated[
    StrictStr,
    Field(max_length=subscriptions.MAX_DESCRIPTION),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": subscriptions.MAX_DESCRIPTION,
            "pattern": NO_NUL_PATTERN,
            "description": "no NUL characters",
        }
    ),
]


class SubscriptionCreate(Strict):
    url: StrictStr = Field(max_length=2000, pattern=URL_PATTERN, description=URL_HELP)
    event_types: list[EventType] = Field(min_length=1, max_length=20)
    description: WebhookDescription = ""


class SubscriptionPatch(Strict):
    url: StrictStr | None = Field(None, max_length=2000, pattern=URL_PATTERN, description=URL_HELP)
    event_types: list[EventType] | None = Field(None, min_length=1, max_length=20)
    description: WebhookDescription | None = None


class SubscriptionOut(BaseModel):
    id: int
    url: str
    description: str
    event_types: list[str]
    status: Literal["active", "paused", "disabled"]
    disabled_reason: str | None = Field(description="why it was disabled (failing for too long)")
    failing_since: datetime | None
    secret_rotating_until: datetime | None = Field(description="the previous secret also signs until then")
    created_at: datetime
    created_by: str


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="whsec_...: shown this once (rotate to get a new one)")


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]
    event_types: dict[str, str] = Field(description="the event catalogue: type -> what it tells")


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: str
    state: Literal["pending", "sending", "delivered"]
    attempts: StrictInt
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_duration_ms: int | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class TestSent(BaseModel):
    webhook_id: str


def subscription_out(s: WebhookSubscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=s.id,
        url=s.url,
        description=s.description,
        event_types=list(s.event_types),
        status=s.status,
        disabled_reason=s.disabled_reason,
        failing_since=s.failing_since,
        secret_rotating_until=s.previous_secret_until,
        created_at=s.created_at,
        created_by=s.created_by,
    )


def _policy():
    return delivery.Settings.from_config(current_app.config).policy


@bp.get("/webhooks")
@operation(tags=TAGS, ok=(200, SubscriptionList))
@requires_scope(WRITE)
def list_webhooks():
    """Every webhook subscription (secrets are never shown again), and the event catalogue."""
    return out(
        SubscriptionList(
            items=[subscription_out(s) for s in subscriptions.list_all(db.session)],
            event_types=catalogue.EVENT_TYPES,
        )
    )


@bp.post("/webhooks")
@operation(tags=TAGS, json=SubscriptionCreate, ok=(201, SubscriptionCreated))
@requires_scope(WRITE)
@transactional
def create_webhook():
    """Subscribe a URL to event types. The answer carries the signing secret (Standard Webhooks,
    ``whsec_...``) this once. Private, loopback and link-local destinations are refused (422
    ``webhook_url_refused``)."""
    body = json_body(SubscriptionCreate)
    created, secret = subscriptions.create(
        db.session,
        body.url,
        list(body.event_types),
        description=body.description,
        policy=_policy(),
        actor=actor(),
    )
    return out(
        SubscriptionCreated(**subscription_out(created).model_dump(), secret=secret),
        201,
        {"Location": url_for("api.get_webhook", subscription_id=created.id)},
    )


@bp.get("/webhooks/<int:subscription_id>")
@operation(tags=TAGS, ok=(200, SubscriptionOut))
@requires_scope(WRITE)
def get_webhook(subscription_id: int):
    """One subscription."""
    return out(subscription_out(subscriptions.get(db.session, subscription_id)))


@bp.patch("/webhooks/<int:subscription_id>")
@operation(tags=TAGS, json=SubscriptionPatch, ok=(200, SubscriptionOut))
@requires_scope(WRITE)
@transactional
def patch_webhook(subscription_id: int):
    """Change the URL, the event types or the description."""
    body = json_body(SubscriptionPatch)
    changed = subscriptions.update_subscription(
        db.session,
        subscription_id,
        url=body.url,
        event_types=None if body.event_types is None else list(body.event_types),
        description=body.description,
        policy=_policy(),
    )
    return out(subscription_out(changed))


@bp.delete("/webhooks/<int:subscription_id>")
@operation(tags=TAGS, ok=(200, SubscriptionOut))
@requires_scope(WRITE)
@transactional
def delete_webhook(subscription_id: int):
    """Remove a subscription and its deliveries."""
    found = subscription_out(subscriptions.get(db.session, subscription_id))
    subscriptions.remove(db.session, subscription_id)
    return out(found)


@bp.post("/webhooks/<int:subscription_id>/rotate")
@operation(tags=TAGS, ok=(200, SubscriptionCreated))
@requires_scope(WRITE)
@transactional
def rotate_webhook_secret(subscription_id: int):
    """A new secret, shown this once; the previous one keeps signing too (a second
    ``v1,`` signature) for a day, so receivers can switch without losing events."""
    rotated, secret = subscriptions.rotate(db.session, subscription_id)
    return out(SubscriptionCreated(**subscription_out(rotated).model_dump(), secret=secret))


@bp.post("/webhooks/<int:subscription_id>/pause")
@operation(tags=TAGS, ok=(200, SubscriptionOut))
@requires_scope(WRITE)
@transactional
def pause_webhook(subscription_id: int):
    """Stop sending; events keep being kept for it and go out once resumed."""
    return out(subscription_out(subscriptions.pause(db.session, subscription_id)))


@bp.post("/webhooks/<int:subscription_id>/resume")
@operation(tags=TAGS, ok=(200, SubscriptionOut))
@requires_scope(WRITE)
@transactional
def resume_webhook(subscription_id: int):
    """Send again (also a subscription that was disabled): what waited goes out now."""
    return out(subscription_out(subscriptions.resume(db.session, subscription_id)))


@bp.post("/webhooks/<int:subscription_id>/test")
@operation(tags=TAGS, ok=(202, TestSent))
@requires_scope(WRITE)
@transactional
def test_webhook(subscription_id: int):
    """Send a ``webhook.test`` event to this subscription."""
    return out(TestSent(webhook_id=subscriptions.send_test(db.session, subscription_id, actor())), 202)


@bp.get("/webhooks/<int:subscription_id>/deliveries")
@operation(tags=TAGS, ok=(200, DeliveryList))
@requires_scope(WRITE)
def list_webhook_deliveries(subscription_id: int):
    """The subscription's last 50 deliveries, newest first."""
    views = subscriptions.deliveries(db.session, subscription_id, limit=50)
    return out(DeliveryList(items=[delivery_out(v) for v in views]))


@bp.post("/webhooks/<int:subscription_id>/deliveries/<int:delivery_id>/redeliver")
@operation(tags=TAGS, ok=(202, DeliveryOut))
@requires_scope(WRITE)
@transactional
def redeliver_webhook(subscription_id: int, delivery_id: int):
    """Send one delivery again now, with the same ``webhook-id``."""
    subscriptions.redeliver(db.session, subscription_id, delivery_id)
    views = [
        v for v in subscriptions.deliveries(db.session, subscription_id, limit=1000) if v.id == delivery_id
    ]
    return out(delivery_out(views[0]), 202)


def delivery_out(v: subscriptions.DeliveryView) -> DeliveryOut:
    return DeliveryOut(
        id=v.id,
        webhook_id=v.msg_id,
        event_type=v.event_type,
        state=v.state,
        attempts=v.attempts,
        last_attempt_at=v.last_attempt_at,
        last_status=v.last_status,
        last_error=v.last_error,
        last_duration_ms=v.last_duration_ms,
        next_attempt_at=v.next_attempt_at,
        delivered_at=v.delivered_at,
        created_at=v.created_at,
    )
