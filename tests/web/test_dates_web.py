"""No date answers 5xx on the dashboard's forms either (issue 21): expiry, scheduled change and
report month, over the whole calendar with every offset (hypothesis). A datetime-local field
sends no offset (UTC); one typed with an offset is converted."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import event, given

from tests.support.dates import SETTINGS, moment_texts, started, window
from webapp.rules import MAX_TTL_SECONDS

SLUG = "WEB_DATES"


@pytest.fixture
def segment(api):
    api.segment(SLUG)
    return SLUG


def verdict(response, expected: int | None) -> None:
    """A form fragment (200) or the form with its problems (422); never a 5xx."""
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    event(f"answered {response.status_code}")
    allowed = {200, 422} if expected is None else {expected}
    assert response.status_code in allowed, (response.status_code, response.get_data(as_text=True)[:300])


@SETTINGS
@given(moment=moment_texts(separators="T"))
def test_every_expiry_on_the_user_page(htmx, segment, moment):
    value, text = moment
    response = htmx("/users/7/segments", {"slug": segment, "expires_at": text})
    verdict(response, window(value, timedelta(seconds=MAX_TTL_SECONDS), naive_ok=True))


@SETTINGS
@given(moment=moment_texts(separators="T"))
def test_every_expiry_of_a_bulk_add(htmx, segment, moment):
    value, text = moment
    response = htmx(f"/segments/{segment}/members", {"user_ids": "7\n8", "expires_at": text})
    verdict(response, window(value, timedelta(seconds=MAX_TTL_SECONDS), naive_ok=True))


@SETTINGS
@given(moment=moment_texts(separators="T"))
def test_every_scheduled_change_time(htmx, segment, moment):
    value, text = moment
    response = htmx(f"/segments/{segment}/schedule", {"at": text, "rollout_percent": "10"})
    verdict(response, window(value, timedelta(days=365), naive_ok=True))


@SETTINGS
@given(moment=moment_texts())
def test_every_report_month_on_the_dashboard(htmx, moment):
    value: datetime = moment[0]
    period = f"{value.year:04d}-{value.month:02d}"
    expected = 200 if value.year >= 1970 and started(value.year, value.month) else 422
    verdict(htmx("/reports", {"kind": "all_history", "period": period}), expected)
    verdict(htmx("/users/7/report", {"period": period}), expected)
