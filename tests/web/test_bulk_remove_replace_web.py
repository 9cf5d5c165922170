"""Dashboard: "Remove these ids" / "Replace members with this file", previewed with how many
leave and join, then confirmed (segments/_bulk_remove_replace.html and its three views)."""

from __future__ import annotations

import io
import re

import sqlalchemy as sa
from flask import render_template

from webapp.jobs.worker import run_worker
from webapp.platform.extensions import db
from webapp.services.segments import lifecycle as segments
from webapp.web.helpers import TTL_CHOICES

FINGERPRINT_RE = re.compile(r'name="fingerprint" value="([0-9a-f]+)"')


def strip(html: str) -> str:
    """Text without its tags (white space runs as one space)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split()).replace(" ,", ",").replace(" .", ".")


def words(response) -> str:
    """The response's text with every run of white space as one space."""
    return " ".join(response.get_data(as_text=True).split())


def members(slug):
    return [
        row[0]
        for row in db.session.execute(
            sa.text(
                "SELECT m.user_id FROM memberships m JOIN segments s ON s.id = m.segment_id "
                "WHERE s.slug = :slug AND s.deleted_at IS NULL ORDER BY 1"
            ),
            {"slug": slug},
        )
    ]


def setup_segment(api, slug, ids):
    api.segment(slug)
    assert api.post(f"/segments/{slug}/members", {"user_ids": list(ids)}).status_code == 200


def test_the_card_renders_with_both_choices(app, db_session, api):
    api.segment("CARD")
    with app.test_request_context("/segments/CARD"):
        html = render_template(
            "segments/_bulk_remove_replace.html",
            segment=segments.get_live_segment(db_session, "CARD"),
            ttl_choices=TTL_CHOICES,
        )
    assert "Remove these ids" in html and "Replace members with this file" in html
    assert 'hx-post="/segments/CARD/members/bulk-preview"' in html and 'name="csrf_token"' in html


def test_remove_is_previewed_then_applied(htmx, api):
    setup_segment(api, "WEB_RM", range(1, 11))
    preview = htmx("/segments/WEB_RM/members/bulk-preview", {"mode": "remove", "user_ids": "2, 3 3\n99"})
    text = words(preview)
    assert preview.status_code == 200, text
    assert "Remove these ids: 2 will leave, 0 will join WEB_RM" in strip(text), text
    assert "3 users listed (1 repeated id counted once). 1 of them is not in WEB_RM." in strip(text)
    assert members("WEB_RM") == list(range(1, 11))  # a preview changes nothing
    fingerprint = FINGERPRINT_RE.search(text).group(1)
    applied = htmx(
        "/segments/WEB_RM/members/bulk-change",
        {"mode": "remove", "user_ids": "2, 3 3\n99", "confirm": "yes", "fingerprint": fingerprint},
    )
    assert applied.status_code == 200 and "2 removed from WEB_RM" in words(applied)
    assert applied.headers["HX-Trigger"] == "segment-changed"
    assert members("WEB_RM") == [1, *range(4, 11)]
    reasons = (
        db.session.execute(
            sa.text(
                "SELECT DISTINCT reason FROM membership_events WHERE action = 'removed' "
                "AND segment_slug = 'WEB_RM'"
            )
        )
        .scalars()
        .all()
    )
    assert reasons == ["dashboard"]


def test_replace_from_a_file_states_who_leaves_and_joins(htmx, api):
    setup_segment(api, "WEB_REP", range(1, 11))
    upload = b"user_id\n" + b"\n".join(str(i).encode() for i in range(8, 16))
    data = {"mode": "replace", "ttl_seconds": "86400"}
    preview = htmx(
        "/segments/WEB_REP/members/bulk-preview",
        {**data, "file": (io.BytesIO(upload), "ids.csv")},
        content_type="multipart/form-data",
    )
    text = words(preview)
    assert "7 will leave, 5 will join WEB_REP" in strip(text), text
    fingerprint = FINGERPRINT_RE.search(text).group(1)
    applied = htmx(
        "/segments/WEB_REP/members/bulk-change",
        {**data, "confirm": "yes", "fingerprint": fingerprint, "file": (io.BytesIO(upload), "ids.csv")},
        content_type="multipart/form-data",
    )
    assert "5 joined, 7 left, 3 expiry updated" in words(applied)
    assert members("WEB_REP") == list(range(8, 16))
    assert all(s["expires_at"] for s in api.active(9))


def test_a_change_is_refused_unconfirmed_or_when_the_list_changed_since_the_preview(htmx, api):
    setup_segment(api, "WEB_GUARD", range(1, 6))
    unconfirmed = htmx("/segments/WEB_GUARD/members/bulk-change", {"mode": "remove", "user_ids": "1"})
    assert unconfirmed.status_code == 422 and "Preview the change and confirm it first" in words(unconfirmed)
    fingerprint = FINGERPRINT_RE.search(
        htmx("/segments/WEB_GUARD/members/bulk-preview", {"mode": "remove", "user_ids": "1"}).get_data(
            as_text=True
        )
    ).group(1)
    changed = htmx(
        "/segments/WEB_GUARD/members/bulk-change",
        {"mode": "replace", "user_ids": "1", "confirm": "yes", "fingerprint": fingerprint},
    )
    assert changed.status_code == 422 and "changed since the preview" in words(changed)
    bad = htmx("/segments/WEB_GUARD/members/bulk-preview", {"mode": "remove", "user_ids": "1, x2"})
    assert bad.status_code == 422 and "x2" in words(bad)
    empty = htmx("/segments/WEB_GUARD/members/bulk-preview", {"mode": "replace"})
    assert empty.status_code == 422 and "Paste user ids or choose a file" in words(empty)
    assert members("WEB_GUARD") == [1, 2, 3, 4, 5]


def test_without_javascript_the_preview_is_the_whole_page_with_its_confirmation(client, csrf, api):
    setup_segment(api, "WEB_NOJS", range(1, 4))
    preview = client.post(
        "/segments/WEB_NOJS/members/bulk-preview",
        data={"mode": "remove", "user_ids": "1", "csrf_token": csrf},
    )
    page = preview.get_data(as_text=True)
    assert preview.status_code == 200 and '<h1 class="slug-title">WEB_NOJS</h1>' in page
    assert "Remove these ids: 1 will leave, 0 will join WEB_NOJS" in strip(page)
    assert members("WEB_NOJS") == [1, 2, 3]
    fingerprint = FINGERPRINT_RE.search(page).group(1)
    version = re.search(r'name="catalog_version" value="(\d+)"', page).group(1)
    applied = client.post(
        "/segments/WEB_NOJS/members/bulk-change",
        data={
            "mode": "remove",
            "user_ids": "1",
            "confirm": "yes",
            "fingerprint": fingerprint,
            "catalog_version": version,
            "csrf_token": csrf,
        },
    )
    assert applied.status_code == 302 and members("WEB_NOJS") == [2, 3]
    no_csrf = client.post(
        "/segments/WEB_NOJS/members/bulk-change", data={"mode": "remove", "user_ids": "2", "confirm": "yes"}
    )
    assert no_csrf.status_code == 400 and members("WEB_NOJS") == [2, 3]


def test_a_large_replace_shows_its_progress_until_done(redis_app, committed_db):
    client = redis_app.test_client()
    page = client.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/api/v1/segments", json={"slug": "WEB_BIG"})
    headers = {"HX-Request": "true", "X-CSRFToken": csrf}
    ids = "\n".join(str(i) for i in range(1, 12_001))
    applied = client.post(
        "/segments/WEB_BIG/members/bulk-change",
        data={"mode": "replace", "user_ids": ids, "confirm": "yes"},
        headers=headers,
    )
    text = words(applied)
    assert applied.status_code == 200 and "in the background" in text, text
    status_url = re.search(r'hx-get="([^"]+/bulk-change/[^"]+)"', text).group(1)
    run_worker(redis_app, burst=True, fork=False)
    done = client.get(status_url, headers=headers)
    assert "12,000 added, 0 expiry updated, 0 removed" in words(done)
    assert done.headers["HX-Trigger"] == "segment-changed"
    with redis_app.app_context():
        assert len(members("WEB_BIG")) == 12_000
