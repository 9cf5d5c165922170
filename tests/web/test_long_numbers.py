"""Issue 22, finding 2: numbers of any length are a clear 4xx or form error, never a 500.

Python's ``int()`` refuses strings of more than 4,300 digits (ValueError); a dashboard form
that passed a client's digits to it answered 500. Every input where a client sends digits is
fed long digit strings here (with leading zeros, spaces, and as a CSV cell or a header-less
file line), through one bounded parser (``webapp.rules.bounded_int``).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp.errors import ValidationFailed
from webapp.rules import MAX_USER_ID, bounded_int
from webapp.services.common import ascii_int, parse_user_id
from webapp.web.id_lists import parse_file, parse_pasted, token_problem

SLUG = "LONG_NUMBERS"
EXAMPLES = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# 20 to 6,000 digits: past a user id's 19, and (at least one example in two) past the
# 4,300 that int() reads; some with leading zeros. Long strings repeat a drawn chunk, so
# hypothesis's own data stays small.
long_digits = st.builds(
    lambda zeros, first, chunk, size: "0" * zeros + first + (chunk * (size // len(chunk) + 1))[:size],
    st.integers(0, 50),
    st.sampled_from("123456789"),
    st.text("0123456789", min_size=1, max_size=40),
    st.one_of(st.integers(4301, 6000), st.integers(19, 4400)),
)


@given(long_digits)
def test_the_one_parser_bounds_before_int(text):
    assert bounded_int(text, MAX_USER_ID) is None
    assert ascii_int(text, 0, MAX_USER_ID) is None
    assert token_problem(text) is not None and "too large" in token_problem(text)
    with pytest.raises(ValidationFailed):
        parse_user_id(text)
    with pytest.raises(ValidationFailed, match="not user ids|1 of|user id"):
        parse_pasted(f"5, {text}\n7", 10)
    with pytest.raises(ValidationFailed):
        parse_file(io.BytesIO(f"user_id,email\n5,a@b\n{text},c@d\n".encode()), "ids.csv", 10)
    with pytest.raises(ValidationFailed):
        parse_file(io.BytesIO(f"5\n{text}\n".encode()), "ids.txt", 10)


@given(st.integers(1, MAX_USER_ID), st.integers(0, 30))
def test_the_one_parser_reads_every_user_id(value, zeros):
    text = "0" * zeros + str(value)
    assert bounded_int(text, MAX_USER_ID) == value
    assert parse_user_id(str(value)) == value
    assert parse_pasted(f"{text}", 10).ids == [value]


@pytest.fixture
def segment(api):
    api.segment(SLUG)
    return SLUG


@settings(parent=EXAMPLES)
@given(text=long_digits)
def test_dashboard_forms_and_pages(client, csrf, segment, text):
    headers = {"X-CSRFToken": csrf}
    htmx = {**headers, "HX-Request": "true"}
    spaced = " ".join(text[i : i + 100] for i in range(0, len(text), 100))
    month = "2024-01"
    calls = {
        "user search box": lambda: client.get(f"/users?id={spaced}"),
        "user page": lambda: client.get(f"/users/{text}"),
        "members find": lambda: client.get(f"/segments/{segment}?user_id={text}"),
        "members fragment": lambda: client.get(
            f"/segments/{segment}/members?user_id={text}&after={text}", headers=htmx
        ),
        "members page cursor": lambda: client.get(f"/segments/{segment}?after={text}&page={text}"),
        "segments page": lambda: client.get(f"/?page={text}"),
        "bulk paste": lambda: client.post(
            f"/segments/{segment}/members", data={"user_ids": f"1, {text}"}, headers=htmx
        ),
        "bulk paste, no htmx": lambda: client.post(
            f"/segments/{segment}/members", data={"user_ids": f"1\n{text}"}, headers=headers
        ),
        "uploaded file line": lambda: client.post(
            f"/segments/{segment}/members",
            data={"file": (io.BytesIO(f"user_id\n1\n{text}\n".encode()), "ids.csv")},
            headers=htmx,
            content_type="multipart/form-data",
        ),
        "uploaded csv cell": lambda: client.post(
            f"/segments/{segment}/members",
            data={"file": (io.BytesIO(f"email,user_id\na,1\nb,{text}\n".encode()), "ids.csv")},
            headers=htmx,
            content_type="multipart/form-data",
        ),
        "bulk preview": lambda: client.post(
            f"/segments/{segment}/members/bulk-preview",
            data={"mode": "remove", "user_ids": text},
            headers=htmx,
        ),
        "bulk change": lambda: client.post(
            f"/segments/{segment}/members/bulk-change",
            data={"mode": "replace", "user_ids": text, "confirm": "yes"},
            headers=htmx,
        ),
        "bulk add ttl": lambda: client.post(
            f"/segments/{segment}/members", data={"user_ids": "1", "ttl_seconds": text}, headers=htmx
        ),
        "reports form": lambda: client.post(
            "/reports", data={"kind": "user_history", "user_id": text, "period": month}, headers=htmx
        ),
        "reports form, no htmx": lambda: client.post(
            "/reports", data={"kind": "user_history", "user_id": spaced, "period": month}, headers=headers
        ),
        "user add": lambda: client.post(f"/users/{text}/segments", data={"slug": segment}, headers=htmx),
        "user add ttl": lambda: client.post(
            "/users/5/segments", data={"slug": segment, "ttl_seconds": text}, headers=htmx
        ),
        "user report": lambda: client.post(f"/users/{text}/report", data={"period": month}, headers=htmx),
        "member remove": lambda: client.post(f"/segments/{segment}/members/{text}/remove", headers=htmx),
        "schedule cancel": lambda: client.post(f"/segments/{segment}/schedule/{text}/cancel", headers=htmx),
        "rollout preview": lambda: client.get(f"/segments/{segment}/rollout-preview?rollout_percent={text}"),
        "settings percent": lambda: client.post(
            f"/segments/{segment}/settings", data={"rollout_percent": text}, headers=htmx
        ),
    }
    failed = {what: status for what, call in calls.items() if (status := call().status_code) >= 500}
    assert not failed, f"{len(text)} digits: {failed}"
    problem = client.get(f"/users?id={text}").get_data(as_text=True)
    assert "too large to be a user id" in problem


@settings(parent=EXAMPLES)
@given(text=long_digits)
def test_api_and_seed_routes(client, api, segment, text):
    calls = {
        "api user read": lambda: client.get(f"/api/v1/users/{text}/segments"),
        "api user change": lambda: api.post(f"/users/{text}/segments", {"add": [{"slug": segment}]}),
        "api history": lambda: client.get(f"/api/v1/users/{text}/history"),
        "api members cursor": lambda: client.get(
            f"/api/v1/segments/{segment}/members?after={text}&limit={text}"
        ),
        "api segments page": lambda: client.get(f"/api/v1/segments?page={text}&per_page={text}"),
        "api activity cursor": lambda: client.get(
            f"/api/v1/segments/{segment}/activity?before={text}&limit={text}"
        ),
        "api schedule cancel": lambda: client.delete(f"/api/v1/segments/{segment}/schedule/{text}"),
        "api report": lambda: client.post(
            "/api/v1/reports",
            data=f'{{"user_id": {text}, "period": "2024-01"}}',
            content_type="application/json",
        ),
        "api bulk": lambda: client.post(
            f"/api/v1/segments/{segment}/members",
            data=f'{{"user_ids": [1, {text}]}}',
            content_type="application/json",
        ),
        "api lookup": lambda: client.post(
            "/api/v1/users/segments:lookup", data=f'{{"user_ids": [{text}]}}', content_type="application/json"
        ),
        "seed read": lambda: client.get(f"/segment/user?id={text}"),
        "seed change": lambda: client.post(
            "/segment/user",
            data=f'{{"user_id": {text}, "add": ["{segment}"], "del": [], "ttl_days": {text}}}',
            content_type="application/json",
        ),
        "seed report": lambda: client.get(f"/report?date=2024-01&user_id={text}"),
    }
    failed = {}
    for what, call in calls.items():
        response = call()
        if not 400 <= response.status_code < 500 or not (response.is_json and "error" in response.json):
            failed[what] = response.status_code
    assert not failed, f"{len(text)} digits: {failed}"
