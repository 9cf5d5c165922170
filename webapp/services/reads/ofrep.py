"""OpenFeature's remote evaluation protocol (OFREP) over the hot read: what each answer says.

A segment is a boolean flag: its slug is the flag's key, ``context.targetingKey`` the user id
(decimal digits, as the API's paths take it). Other context attributes are accepted and
ignored (dynamic segments will use them). The value is whether the user is in the segment now,
exactly as the hot read answers (``read_path.Reader.view``: the same read, the same rule); the
reason says why:

- ``TARGETING_MATCH``: an explicit membership (metadata ``source`` ``explicit``, and
  ``expires_at`` when it has one);
- ``SPLIT``: the segment's rollout covers the user (``source`` ``rollout``);
- ``DEFAULT``: the user is not in the segment (value ``false``).

The variant is ``on`` or ``off``. A key that is no live segment is 404 ``FLAG_NOT_FOUND``; a
request without a targeting key 400 ``TARGETING_KEY_MISSING``, one whose targeting key is no
user id 400 ``INVALID_CONTEXT``, a body that is not JSON 400 ``PARSE_ERROR`` (the protocol's
error format: ``errors.ofrep_failure``). Bulk evaluation answers every live segment, sorted by
slug, and its ``ETag`` is a digest of the answer. Nothing here reads the database: the reader
(``read_path.Reader.evaluate_flag``, ``evaluate_flags``) reads and calls these.

The protocol's OpenAPI document, as vendored: ``docs/ofrep-openapi.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from webapp.errors import ValidationFailed, ofrep_failure
from webapp.models.enums import Source
from webapp.services.common import iso, parse_user_id
from webapp.services.reads.catalog import ActiveSegment, Catalog

FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
PARSE_ERROR = "PARSE_ERROR"
TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
INVALID_CONTEXT = "INVALID_CONTEXT"
GENERAL = "GENERAL"
TARGETING_MATCH, SPLIT, DEFAULT = "TARGETING_MATCH", "SPLIT", "DEFAULT"
REASONS = {Source.EXPLICIT: TARGETING_MATCH, Source.ROLLOUT: SPLIT, Source.RULE: TARGETING_MATCH}
LINE_END = "\n"  # (as every JSON body the app writes: read_path.LINE_END)


@dataclass(frozen=True)
class Failure:
    """Why a request's context names no user: an OFREP error code and its words."""

    code: str
    details: str

    def body(self, key: str | None = None) -> bytes:
        return json_body(ofrep_failure(self.code, self.details, key))


def json_body(value: object) -> bytes:
    return (json.dumps(value, separators=(",", ":")) + LINE_END).encode()


def targeting_user(raw: bytes) -> int | Failure:
    """The user id an evaluation request's body names (``{"context": {"targetingKey": "42"}}``),
    or why it names none. An empty body is a request without a context."""
    try:
        request = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError is a ValueError; too deep)
        return Failure(PARSE_ERROR, f"the request body is not JSON: {str(exc)[:200]}")
    if not isinstance(request, dict):
        return Failure(
            PARSE_ERROR, 'the request body must be a JSON object: {"context": {"targetingKey": ...}}'
        )
    context = request.get("context")
    if context is not None and not isinstance(context, dict):
        return Failure(INVALID_CONTEXT, "context must be a JSON object")
    key = None if context is None else context.get("targetingKey")
    if key is None or key == "":
        return Failure(TARGETING_KEY_MISSING, 'context.targetingKey is required: the user id, e.g. "1000"')
    if not isinstance(key, str):
        return Failure(INVALID_CONTEXT, 'context.targetingKey must be a string: the user id, e.g. "1000"')
    try:
        return parse_user_id(key, "context.targetingKey")
    except ValidationFailed as exc:
        return Failure(INVALID_CONTEXT, f"context.targetingKey is not a user id: {exc.message}")


def evaluation(key: str, catalog: Catalog, active: Sequence[ActiveSegment]) -> tuple[int, bytes]:
    """The single evaluation of flag ``key`` for a user whose read gave ``active`` under
    ``catalog``: 200 and its value, or 404 FLAG_NOT_FOUND when no live segment has that slug."""
    if key not in catalog.by_slug:
        return 404, json_body(ofrep_failure(FLAG_NOT_FOUND, f"no live segment has the slug {key!r}", key))
    entry = next((a for a in active if a.slug == key), None)
    return 200, (flag_json(key, entry) + LINE_END).encode()


def bulk(catalog: Catalog, active: Sequence[ActiveSegment]) -> bytes:
    """The bulk evaluation: every live segment, by slug, with the user's value."""
    member = {a.slug: a for a in active}
    slugs = catalog.lookup.slug.tolist()  # (sorted: by rank)
    return ('{"flags":[' + ",".join(flag_json(s, member.get(s)) for s in slugs) + "]}" + LINE_END).encode()


def flag_json(key: str, entry: ActiveSegment | None) -> str:
    """One evaluation: ``entry`` is the user's entry of the segment, None when not a member.
    (Written as a string: a slug is letters, digits and underscores; a timestamp needs no
    escaping either.)"""
    if entry is None:
        return f'{{"key":"{key}","value":false,"reason":"{DEFAULT}","variant":"off","metadata":{{}}}}'
    until = "" if entry.expires_at is None else f',"expires_at":"{iso(entry.expires_at)}"'
    return (
        f'{{"key":"{key}","value":true,"reason":"{REASONS[entry.source]}","variant":"on",'
        f'"metadata":{{"source":"{entry.source}"{until}}}}}'
    )


def etag(body: bytes) -> str:
    """A strong entity tag derived from the answer: any change of the answer changes it."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Does an ``If-None-Match`` header name ``tag`` (weak comparison, as RFC 9110 says for it;
    ``*`` matches any)?"""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def configuration(min_polling_interval_ms: int) -> bytes:
    """``GET /ofrep/v1/configuration``: our name and what a provider may do. Every evaluation is
    exact when it is made (memberships expire to the microsecond, schedules apply from their
    second), so providers must not cache evaluations (``caching.enabled`` false); bulk
    evaluation may be polled (with ``If-None-Match``: an unchanged answer is a 304), no more
    often than ``min_polling_interval_ms``. Flags are booleans only."""
    return json_body(
        {
            "name": "Segments",
            "capabilities": {
                "cacheInvalidation": {
                    "polling": {"enabled": True, "minPollingIntervalMs": min_polling_interval_ms}
                },
                "flagEvaluation": {"supportedTypes": ["boolean"]},
                "caching": {"enabled": False},
            },
        }
    )
