"""The Webhooks page (issue 27) without a browser: the list, adding one (its secret shown once,
on the answer that made it), refusals in plain words, pause/resume, rotate, redeliver, and the
no-JavaScript answers."""

from __future__ import annotations

import re

from sqlalchemy import text

from webapp.platform.extensions import db

SSO = {"X-Forwarded-Email": "pm@example.com"}
SECRET = re.compile(r'class="secret-value">(whsec_[^<]+)<')


def test_add_shows_the_secret_once_then_lists_the_webhook(client, htmx):
    assert "No webhooks yet" in client.get("/webhooks", headers=SSO).get_data(as_text=True)
    added = htmx(
        "/webhooks", {"url": "https://hooks.example.com/in", "event_types": ["segment.created"]}, headers=SSO
    )
    assert added.status_code == 200
    html = added.get_data(as_text=True)
    assert SECRET.search(html) and 'hx-swap-oob="true"' in html and "copy its secret now" in html
    page = client.get("/webhooks", headers=SSO).get_data(as_text=True)
    assert "https://hooks.example.com/in" in page and not SECRET.search(page)
    assert 'aria-current="page">Webhooks' in page


def test_a_refused_address_is_worded_next_to_its_field(client, htmx):
    refused = htmx(
        "/webhooks", {"url": "http://10.0.0.5/hook", "event_types": ["segment.created"]}, headers=SSO
    )
    assert refused.status_code == 422
    assert "only sent to public addresses" in refused.get_data(as_text=True)
    none = htmx("/webhooks", {"url": "https://hooks.example.com/in"}, headers=SSO)
    assert none.status_code == 422 and "Choose at least one event" in none.get_data(as_text=True)


def test_pause_resume_rotate_test_and_redeliver(client, htmx, api):
    sub = api.post(
        "/webhooks", {"url": "https://hooks.example.com/x", "event_types": ["segment.created"]}
    ).json
    paused = htmx(f"/webhooks/{sub['id']}/pause", headers=SSO).get_data(as_text=True)
    assert "webhook-paused" in paused and ">Resume<" in paused
    api.segment("SHOWN_ON_THE_PAGE")
    page = client.get("/webhooks", headers=SSO).get_data(as_text=True)
    assert "segment.created" in page and ">Redeliver<" in page
    resumed = htmx(f"/webhooks/{sub['id']}/resume", headers=SSO).get_data(as_text=True)
    assert "webhook-active" in resumed
    rotated = htmx(f"/webhooks/{sub['id']}/rotate", headers=SSO).get_data(as_text=True)
    assert SECRET.search(rotated) and SECRET.search(rotated).group(1) != sub["secret"]
    assert "Test event queued" in htmx(f"/webhooks/{sub['id']}/test", headers=SSO).get_data(as_text=True)
    delivery_id = db.session.execute(text("SELECT min(id) FROM webhook_deliveries")).scalar()
    db.session.execute(
        text("UPDATE webhook_deliveries SET state = 'delivered', last_status = 200, attempts = 1")
    )
    again = htmx(f"/webhooks/{sub['id']}/deliveries/{delivery_id}/redeliver", headers=SSO)
    assert again.status_code == 200 and "same webhook-id" in again.get_data(as_text=True)
    assert htmx("/webhooks/999/pause", headers=SSO).status_code == 404


def test_without_javascript_the_page_itself_answers(client, csrf):
    answer = client.post(
        "/webhooks",
        data={
            "url": "https://hooks.example.com/nojs",
            "event_types": ["segment.deleted"],
            "csrf_token": csrf,
        },
        headers=SSO,
    )
    assert answer.status_code == 200 and SECRET.search(answer.get_data(as_text=True))
    assert "<html" in answer.get_data(as_text=True).lower()
