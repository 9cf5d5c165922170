"""No date answers 5xx (issue 21): every date field of the API and of the seed's paths, over
the whole calendar with every offset (hypothesis), answers 2xx when the date is valid for the
field and a 4xx with the JSON envelope when it is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import currently_in_test_context, event, example, given
from hypothesis import strategies as st

from tests.support.dates import SETTINGS, in_utc, moment_texts, started, window
from webapp.rules import MAX_TTL_SECONDS

SLUG = "DATES"


@pytest.fixture
def segment(api):
    api.segment(SLUG)
    return SLUG


def envelope(response, *statuses: int) -> dict:
    """The response is one of ``statuses`` and, when an error, the JSON error envelope."""
    assert response.status_code in statuses, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.status_code < 500
    if currently_in_test_context():  # --hypothesis-show-statistics shows both kinds happen
        event(f"answered {response.status_code}")
    if response.status_code >= 400:
        error = response.json["error"]
        assert set(error) == {"code", "message", "details"} and error["message"]
    return response.json


def expect(response, verdict: int | None, ok: int = 200) -> None:
    if verdict is None:
        envelope(response, ok, 422)
    else:
        envelope(response, ok if verdict == 200 else 422)


EXTREMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-12:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59-12:00",
    "9999-12-31T23:59:59.999999+14:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59",
]


@pytest.mark.parametrize("text", EXTREMES)
def test_extreme_expiry_is_422_not_500(api, segment, text):
    """Before the fix, the first answered 500 (OverflowError converting it to UTC)."""
    body = envelope(api.change(7, [segment], expires_at=text), 422)
    assert body["error"]["details"][0]["field"] == "expires_at"


@SETTINGS
@given(moment=moment_texts(), where=st.sampled_from(["top", "item", "bulk add", "bulk replace"]))
@example(moment=(datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00+14:00"), where="top")
def test_every_expiry(api, segment, moment, where):
    value, text = moment
    if where == "top":
        response = api.change(7, [segment], expires_at=text)
    elif where == "item":
        response = api.change(7, [{"slug": segment, "expires_at": text}])
    else:
        call = api.post if where == "bulk add" else api.put
        response = call(f"/segments/{segment}/members", {"user_ids": [7, 8], "expires_at": text})
    expect(response, window(value, timedelta(seconds=MAX_TTL_SECONDS)))


@SETTINGS
@given(moment=moment_texts())
def test_every_schedule_time(api, segment, moment):
    value, text = moment
    response = api.post(f"/segments/{segment}/schedule", {"at": text, "rollout_percent": 10})
    expect(response, window(value, timedelta(days=365)), ok=201)


def range_verdict(start: tuple[datetime, str] | None, end: tuple[datetime, str] | None) -> int:
    """[from, to) as history and reports take it: naive is UTC, each must be a UTC moment in
    years 1..9999, and from before to."""
    bounds = [in_utc(b[0]) if b else datetime.min for b in (start, end)]
    if any(b is None for b in bounds):
        return 422
    if start and end and not bounds[0] < bounds[1]:  # type: ignore[operator]
        return 422
    return 200


@SETTINGS
@given(start=st.none() | moment_texts(), end=st.none() | moment_texts())
@example(start=(datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"), end=None)
@example(start=None, end=(datetime(9999, 12, 31, 23, 59, 59), "9999-12-31T23:59:59"))
def test_every_history_range(api, start, end):
    query = {name: b[1] for name, b in (("from", start), ("to", end)) if b}
    response = api.get("/users/7/history", query_string=query)
    envelope(response, range_verdict(start, end))


@SETTINGS
@given(start=moment_texts(), end=moment_texts())
@example(
    start=(datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    end=(datetime(9999, 12, 31, 23, 59, 59), "9999-12-31T23:59:59"),
)
def test_every_report_range(api, start, end):
    response = api.post("/reports", {"user_id": 7, "from": start[1], "to": end[1]})
    verdict = range_verdict(start, end)
    envelope(response, 202 if verdict == 200 else 422)


@SETTINGS
@given(moment=moment_texts())
def test_every_report_month(api, moment):
    """Months from 1970-01 to the current one are reports; months to come are refused (422),
    as the dashboard refuses them."""
    value = moment[0]
    period = f"{value.year:04d}-{value.month:02d}"
    response = api.post("/reports", {"user_id": 7, "period": period})
    envelope(response, 202 if value.year >= 1970 and started(value.year, value.month) else 422)


@SETTINGS
@given(moment=moment_texts())
def test_every_seed_report_date(client, moment):
    """The seed's /report?date=: YYYY-MM-DD HH:MM or YYYY-MM, years 1970..9998 (a moment to
    come gives an empty report); anything else is 400."""
    value, text = moment
    seed = f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}"
    month = f"{value.year:04d}-{value.month:02d}"
    good = 1970 <= value.year <= 9998
    for date, status in ((seed, 200 if good else 400), (month, 200 if good else 400), (text, None)):
        response = client.get("/report", query_string={"date": date})
        if status is None:
            envelope(response, 200, 400)
        else:
            envelope(response, status)
