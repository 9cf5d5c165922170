"""The Webhooks page (issue 27): subscriptions with their last deliveries; add one (its secret
shown once), pause/resume, rotate the secret (shown once), send a test event, redeliver one
delivery. Every action answers htmx with the list again (and a flash); without JavaScript the
page itself (a secret is shown on the page that made it, never put in a cookie)."""

from __future__ import annotations

from flask import current_app, make_response, render_template, request, url_for

from webapp.errors import AppError
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.platform.extensions import db
from webapp.services.webhooks import catalogue, delivery, subscriptions
from webapp.web.blueprint import bp
from webapp.web.helpers import is_htmx, rejected
from webapp.web.messages import error_words

SHOWN_DELIVERIES = 10
FIELDS = ("url", "event_types", "description")


def _context(secret: tuple[int, str] | None = None, **extra: object) -> dict[str, object]:
    subs = subscriptions.list_all(db.session)
    return {
        "subscriptions": subs,
        "deliveries": {
            s.id: subscriptions.deliveries(db.session, s.id, limit=SHOWN_DELIVERIES) for s in subs
        },
        "event_types": catalogue.EVENT_TYPES,
        "secret": secret,
        "form": extra.pop("form", {}),
        "errors": extra.pop("errors", {}),
        **extra,
    }


def _answer(message: str, secret: tuple[int, str] | None = None):
    """htmx: the list (with the secret in its card, if any) and a flash; else the whole page."""
    if not is_htmx():
        return render_template("webhooks/index.html", flash_message=message, **_context(secret))
    body = render_template("webhooks/_list.html", **_context(secret))
    body += render_template("_flash_oob.html", messages=[("success", message)])
    return make_response(body)


@bp.get("/webhooks")
def webhooks_page():
    return render_template("webhooks/index.html", **_context())


@bp.get("/webhooks/list")
def webhooks_list():
    return render_template("webhooks/_list.html", **_context())


@bp.post("/webhooks")
@transactional
def create_webhook():
    form = request.form
    try:
        created, secret = subscriptions.create(
            db.session,
            form.get("url", ""),
            form.getlist("event_types"),
            description=form.get("description", ""),
            policy=delivery.Settings.from_config(current_app.config).policy,
            actor=dashboard_actor(),
        )
    except AppError as exc:
        return rejected(
            exc,
            url_for("web.webhooks_page"),
            "webhooks/_form.html",
            fields=FIELDS,
            event_types=catalogue.EVENT_TYPES,
        )
    if not is_htmx():
        return render_template(
            "webhooks/index.html", flash_message="Webhook added.", **_context((created.id, secret))
        )
    body = render_template("webhooks/_form.html", form={}, errors={}, event_types=catalogue.EVENT_TYPES)
    body += render_template("webhooks/_list.html", oob=True, **_context((created.id, secret)))
    body += render_template("_flash_oob.html", messages=[("success", "Webhook added: copy its secret now.")])
    return make_response(body)


def _act(subscription_id: int, action: str):
    try:
        if action == "pause":
            subscriptions.pause(db.session, subscription_id)
            return _answer("Webhook paused: events wait for it until it is resumed.")
        if action == "resume":
            subscriptions.resume(db.session, subscription_id)
            return _answer("Webhook resumed: what waited is being sent.")
        if action == "rotate":
            _, secret = subscriptions.rotate(db.session, subscription_id)
            return _answer("New secret: the old one keeps signing for a day.", (subscription_id, secret))
        if action == "test":
            subscriptions.send_test(db.session, subscription_id, dashboard_actor())
            return _answer("Test event queued.")
        subscriptions.remove(db.session, subscription_id)
        return _answer("Webhook removed.")
    except AppError as exc:
        headline, _ = error_words(exc.message, exc.details)
        raise AppError(headline, exc.details, code=exc.code, status=exc.status) from None


@bp.post("/webhooks/<int:subscription_id>/<any(pause, resume, rotate, test, remove):action>")
@transactional
def webhook_action(subscription_id: int, action: str):
    return _act(subscription_id, action)


@bp.post("/webhooks/<int:subscription_id>/deliveries/<int:delivery_id>/redeliver")
@transactional
def redeliver_webhook(subscription_id: int, delivery_id: int):
    subscriptions.redeliver(db.session, subscription_id, delivery_id)
    return _answer("Delivery queued again (same webhook-id).")
