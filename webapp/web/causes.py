"""Why a history entry happened, in words with a link to the change (issue 24, item 7): the
user history page shows each entry's cause (services.history.replay.Cause)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from markupsafe import Markup, escape

from webapp.web.blueprint import bp
from webapp.web.filters import utc


def _pct(value: float | None) -> str:
    return f"{value or 0:g}%"


@bp.app_template_filter("cause_html")
def cause_html(entry: Any) -> Markup:
    """The entry's cause: a segment-level change as "rollout 10% → 20% by pm@example.com at
    2026-12-07 10:00 UTC" linking to that segment's activity (a deleted segment's page has it
    too); a stored change of the user as its reason and actor, as before."""
    cause = getattr(entry, "cause", None)
    reason = str(entry.reason).replace("_", " ")
    actor = entry.actor if entry.actor and entry.actor not in ("system", entry.reason) else ""
    if cause is None or cause.kind == "change":
        return escape(reason + (f" · {actor}" if actor else ""))
    who = cause.actor if cause.actor and cause.actor != "system" else "the system"
    own = cause.segment == entry.segment
    whose = "" if own else f"{cause.segment}'s "
    if cause.kind == "traits":  # a rule row of a trait change: its keys (never values)
        what = f"traits {', '.join(cause.keys)} changed" if cause.keys else "traits cleared"
    elif cause.kind == "rollout":
        what = f"{whose}rollout {_pct(cause.from_percent)} → {_pct(cause.to_percent)}"
    elif cause.kind == "schedule":
        what = f"{whose}scheduled rollout {_pct(cause.from_percent)} → {_pct(cause.to_percent)}"
        who = f"{who} (scheduled)"
    elif cause.kind == "group":
        if cause.from_group and cause.to_group:
            move = f"from group {cause.from_group} to {cause.to_group}"
        elif cause.to_group:
            move = f"into group {cause.to_group}"
        else:
            move = f"out of group {cause.from_group}"
        what = f"{cause.segment} moved {move}"
    elif cause.kind == "rules":
        what = f"{cause.segment} answering by its rules" if own else f"{cause.segment}'s rules switched"
    elif cause.kind == "rules_changed":
        what = f"{cause.segment}'s rules changed"
    elif cause.kind == "created":
        what = f"{cause.segment} created with rules"
    elif cause.kind == "deleted":
        what = f"{cause.segment} deleted"
    else:  # restored
        what = f"{cause.segment} restored"
    if cause.kind == "traits":  # (the user's own traits, on this page)
        href = url_for("web.show_user", user_id=entry.user_id) + "#user-traits"
    else:
        href = url_for("web.show_segment", slug=cause.segment) + (
            "#segment-activity"
            if cause.kind in ("rollout", "schedule", "group", "rules_changed", "created")
            else ""
        )
    prefix = "rule · " if entry.reason == "rule" else ""  # a re-evaluation reached the user later
    return Markup(
        '{prefix}<a class="cause" data-cause="{kind}" href="{href}">{what}</a> by {who} at {at}'
    ).format(prefix=prefix, kind=cause.kind, href=href, what=what, who=who, at=utc(cause.at))
