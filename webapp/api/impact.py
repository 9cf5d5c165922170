"""/api/v1/segments/<slug>/impact: how many known users a change would move, before it is made.

The dashboard's confirmations call the same service (services.impact). A change sent with the
preview's ``?catalog_version=`` is refused (409 ``impact_changed``) once the segments changed."""

from __future__ import annotations

from flask import current_app, request

from webapp.api.blueprint import bp
from webapp.api.docs import operation
from webapp.api.helpers import json_body, out
from webapp.api.schemas import (
    DeleteImpact,
    ImpactOut,
    ImpactRequest,
    MoveOut,
    RemoveImpact,
    RestoreImpact,
    ScheduleImpact,
    UpdateImpact,
)
from webapp.errors import ValidationFailed, detail
from webapp.platform.extensions import db
from webapp.rules import MAX_USER_ID
from webapp.services import impact, restore
from webapp.services.common import ascii_int
from webapp.services.segments.lifecycle import UNSET

TAGS = ("segments",)


def expected_version() -> int | None:
    """The ``catalog_version`` query parameter a change may carry (its preview's), or None."""
    raw = request.args.get("catalog_version")
    if raw is None or raw == "":
        return None
    value = ascii_int(raw, 0, MAX_USER_ID)
    if value is None:
        raise ValidationFailed(
            "catalog_version must be the integer a preview answered",
            [detail("catalog_version", "must be an integer", code="integer_out_of_range", value=raw[:40])],
        )
    return value


def impact_out(found: impact.Impact, change: str) -> ImpactOut:
    return ImpactOut(
        segment=found.segment,
        change=change,
        catalog_version=found.catalog_version,
        known_users=found.known_users,
        leaving=found.leaving,
        joining=found.joining,
        moves=[MoveOut(slug=m.slug, leaving=m.leaving, joining=m.joining) for m in found.moves],
        seconds=round(found.seconds, 4),
        eventual=found.eventual,
    )


def _required(name: str, value: object) -> None:
    if value is None:
        raise ValidationFailed(
            f"{name} is required for this change", [detail(name, "required", code="required")]
        )


@bp.post("/segments/<slug>/impact")
@operation(tags=TAGS, json=ImpactRequest, ok=(200, ImpactOut))
def preview_impact(slug: str):
    """A dry run: how many known users (ids seen in memberships, exclusions or history) the
    change would move out of and into each segment if it were made now — for an immediate change
    exactly the history entries it then writes; for a scheduled step, counted today. Refused as
    the change itself would be (422 ``group_full``, 409 ``group_overlap``, ...); writes nothing.
    Send ``catalog_version`` back with the change (``?catalog_version=``). ``change: "restore"``
    previews ``POST .../restore`` of the most recently deleted segment with the slug: the known
    users who would join it (its kept members, its rollout as it would come back: 0% when its
    group has no room) and leave or join the group's other segments; refused as the restore
    would be (409 ``slug_taken_since``, ``restore_expired``, ..., 404 ``no_deleted_segment``).
    An update that re-evaluates a rule segment (its ``rules``, or the percentage or group of a
    segment with rules) answers ``eventual: true``: its users move as the background
    re-evaluation reaches them; the numbers are the moves once it has reached everyone."""
    body = json_body(ImpactRequest).root
    session = db.session
    if isinstance(body, UpdateImpact):
        given = body.model_fields_set
        found = impact.preview_update(
            session,
            slug,
            rollout_percent=body.rollout_percent if "rollout_percent" in given else UNSET,
            exclusion_group=body.exclusion_group if "exclusion_group" in given else UNSET,
            rules=body.rules if "rules" in given else UNSET,
        )
    elif isinstance(body, ScheduleImpact):
        found = impact.preview_schedule(session, slug, body.at, body.rollout_percent)
    elif isinstance(body, DeleteImpact):
        found = impact.preview_delete(session, slug)
    elif isinstance(body, RestoreImpact):
        days = int(current_app.config.get("RESTORE_DAYS", restore.DEFAULT_DAYS))
        found = impact.preview_restore(session, slug, days)
    elif isinstance(body, RemoveImpact):
        found = impact.preview_remove(session, slug, body.user_ids)
    else:
        found = impact.preview_replace(session, slug, body.user_ids, body.ttl_seconds, body.expires_at)
    return out(impact_out(found, body.change))
