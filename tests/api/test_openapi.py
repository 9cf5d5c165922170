"""The OpenAPI document is served and every documented operation honours it (schemathesis)."""

import contextlib
import itertools
from datetime import datetime, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from webapp.errors import Conflict, ValidationFailed
from webapp.rules import MAX_ITEMS_PER_CHANGE, MAX_TTL_SECONDS
from webapp.services.common import utcnow
from webapp.services.history.reports import parse_bound
from webapp.services.segments import lifecycle as segments
from webapp.services.traits import users as traits
from webapp.services.webhooks import outbound


def test_texts_are_markdown_not_restructuredtext(client):
    """Swagger UI renders CommonMark: the docstrings' ``literal`` would show its backticks."""
    text = client.get("/api/openapi.json").get_data(as_text=True)
    assert "``" not in text
    assert text.count("`") > 20  # the literals are still there, as CommonMark code spans


def test_openapi_document(client):
    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/users/{user_id}/segments" in document["paths"]
    assert "/segment/user" in document["paths"]
    page = client.get("/api/docs")
    assert page.status_code == 200 and b"vendor/swagger-ui/swagger-ui-bundle.js" in page.data
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


# -- the rules no JSON schema can state ----------------------------------------------------------
#
# They depend on the database, the clock, or on comparing one field with another. The document
# states them in words; here each generated request is made to honour them (or, for the
# comparisons, such a request is not used), so every check keeps its default statuses: a
# schema-valid request answered 4xx means the schema is wrong.

CHANGES = ("POST /api/v1/users/{user_id}/segments", "POST /segment/user")
IMPORT = "POST /api/v1/users/traits:import"
FRESH_GROUPS = (f"SCHEMATHESIS_GROUP_{n}" for n in itertools.count())
WEBHOOK_WRITES = ("POST /api/v1/webhooks", "PATCH /api/v1/webhooks/{subscription_id}")
RANGES = (
    "GET /api/v1/users/{user_id}/history",
    "GET /api/v1/users/{user_id}/traits/history",
    "POST /api/v1/reports",
)


def integers_as_integers(value):
    """60.0 as 60 in a query string. JSON Schema's integer admits 60.0, and schemathesis sends it
    in query strings as "60.0"; a query string's integer is digits. (In JSON bodies 60.0 is
    accepted as 60: issue 22, so bodies are sent as generated.)"""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integers_as_integers(item) for item in value]
    return value


def honour_business_rules(case, session) -> None:
    """Make a positive case honour the rules above (``assume`` drops one that cannot)."""
    label = f"{case.operation.method.upper()} {case.operation.path}"
    case.query = integers_as_integers(case.query)
    body = case.body if isinstance(case.body, dict) else {}
    if label == "PATCH /api/v1/users/{user_id}/traits" and isinstance(case.path_parameters, dict):
        # a merge's result holds at most 100 keys: what earlier examples stored for that user
        # does not count against it (each example merges into no traits)
        user = case.path_parameters.get("user_id")
        if isinstance(user, int) and 1 <= user < 2**63:
            traits.delete_traits(session, user, actor="schemathesis")
    if label in CHANGES:
        slugs = [item if isinstance(item, str) else item["slug"] for item in body.get("add") or []]
        slugs += body.get("del") or []
        # A slug listed once across add and del (the schema's uniqueItems covers each list of
        # strings, not an add item's object, nor one list against the other); at most 1000 in all.
        assume(len(set(slugs)) == len(slugs) <= MAX_ITEMS_PER_CHANGE)
        for slug in slugs:  # every slug names a live segment
            with contextlib.suppress(Conflict):
                segments.create_segment(session, slug)
    # a group has room: whether a rollout fits depends on what earlier examples put in a group
    # they happened to name alike (422 group_full), so each example's group is a new one
    if isinstance(body.get("exclusion_group"), str):
        body["exclusion_group"] = next(FRESH_GROUPS)
    # expires_at is in the future, at most ten years ahead (relative to the clock)
    for holder in [body, *(item for item in body.get("add") or [] if isinstance(item, dict))]:
        if isinstance(holder.get("expires_at"), str):
            holder["expires_at"] = within_expiry_window(holder["expires_at"])
    # a scheduled change is in the future, within a year
    if label.endswith(("/schedule", "/impact")) and isinstance(body.get("at"), str):
        body["at"] = within_window(body["at"], timedelta(days=365))
    # a report's month has started (relative to the clock)
    if label == "POST /api/v1/reports" and isinstance(body.get("period"), str):
        body["period"] = min(body["period"], utcnow().strftime("%Y-%m"))
    # a webhook's URL is a public destination (decided by its host: the document says so)
    if label in WEBHOOK_WRITES and isinstance(body.get("url"), str):
        try:
            outbound.check_literal(body["url"], outbound.Policy())
        except outbound.Refused:
            body["url"] = "https://hooks.example.com/segments"
    # from before to
    if label in RANGES:
        values = (case.query or {}) if label.startswith("GET") else body
        start, end = moment(values.get("from")), moment(values.get("to"))
        assume(start is None or end is None or start < end)


def within_expiry_window(value: str) -> str:
    """``value`` if it is an expiry the API accepts now, else one it accepts (30 days ahead)."""
    return within_window(value, timedelta(seconds=MAX_TTL_SECONDS))


def within_window(value: str, horizon: timedelta) -> str:
    """``value`` if it is a time between five minutes and ``horizon`` (less a day) ahead, else
    one 30 days ahead; left alone when it is not a date-time (the API rejects it)."""
    now = utcnow()
    with contextlib.suppress(ValueError, OverflowError):
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if now + timedelta(minutes=5) < at < now + horizon - timedelta(days=1):
            return value
        return (now + timedelta(days=30)).isoformat()
    return value


def moment(value: object) -> datetime | None:
    """A ``from``/``to`` value as the API reads it; None when absent or unreadable (the API judges)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_bound(value, "moment")
    except ValidationFailed:
        return None


def conformance_test(operation, mode, session):
    """A hypothesis test of one operation with ``mode`` data, through every check."""

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        # Idempotency-Key is stateful: schemathesis sends one generated key with different
        # requests, which the API rightly refuses (422 idempotency_key_reused; a replay answers
        # another request's response). tests/api/test_idempotency.py covers it.
        if case.headers:
            case.headers.pop("Idempotency-Key", None)
        if mode.is_positive:
            honour_business_rules(case, session)
        # A file's rules (JSON lines or CSV, each user once, the same cells on every row) are
        # beyond a JSON schema: a generated string is rarely a valid file, so a schema-valid body
        # may be refused (422, the envelope, checked); tests/api/test_trait_import.py holds the
        # route to its rules (every valid file accepted, no 500 for any file).
        excluded = [positive_data_acceptance] if operation.label == IMPORT else []
        case.call_and_validate(excluded_checks=excluded)

    return check


@pytest.mark.slow
def test_every_operation_conforms(app, db_session):
    """No 5xx, documented status codes and content types, bodies matching their schemas, every
    schema-valid request accepted and every schema-invalid one refused: all of schemathesis'
    checks, on positive and on negative data."""
    checked, failed = [], []
    for operation in operations(app):
        definition = operation.definition.raw
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if (
                mode is GenerationMode.NEGATIVE
                and not definition.get("parameters")
                and "requestBody" not in definition
            ):
                continue  # nothing a client sends can be invalid (e.g. GET /groups)
            try:
                conformance_test(operation, mode, db_session)()
            except BaseException as exc:  # (an ExceptionGroup) collect every failure, not just the first
                failed.append(f"{operation.label} ({mode.value} data): {str(exc)[:600]}")
        checked.append(operation.label)
    assert not failed, "\n\n".join(failed)
    assert len(checked) >= 15, checked
