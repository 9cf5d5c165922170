"""Dashboard: exclusion groups (how a group's 100% is shared), scheduled rollout changes (a
timeline with add and cancel), the segment activity log, and reach at a glance.

The segment page includes ``segments/_reach.html``, ``_schedule.html`` and ``_activity.html``;
each part gets its data from the template globals below (so the segment page's own context
needs nothing new) and fetches itself again on ``segment-changed`` where that matters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import redirect, render_template, request, url_for
from markupsafe import Markup

from webapp.errors import AppError, Conflict, NotFound, ValidationFailed, detail
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import abandon, transactional
from webapp.models import RolloutSchedule, Segment
from webapp.platform.extensions import db
from webapp.rules import in_utc, parse_moment, problem_code
from webapp.services import impact
from webapp.services.common import ascii_int, utcnow
from webapp.services.history import segment as segment_trail
from webapp.services.reads import reach
from webapp.services.segments import events as activity_log
from webapp.services.segments import groups, schedules
from webapp.web.blueprint import bp
from webapp.web.filters import moment_html, moment_words
from webapp.web.helpers import catalog_moved, confirmed_version, is_htmx, live_segment, rejected, updated
from webapp.web.messages import error_words, moment_text, upper_slug
from webapp.web.segments import page_context

CHANGED = "segment-changed"
SCHEDULE_FIELDS = ("at", "rollout_percent")
BUCKETS = 10_000

# -- template globals: each part of the segment page fetches its own data ------------------------


@bp.app_template_global()
def segment_activity_log(segment: Segment, limit: int = 30) -> list[Any]:
    return activity_log.activity(db.session, segment, limit=limit)


MOVING_KINDS = ("rollout_changed", "group_changed")


@bp.app_template_global()
def segment_moves(segment: Segment, limit: int = 3) -> list[Any]:
    """The segment's latest rollout and group changes (the activity log's entries): they move
    users in and out without a per-user row in Recent changes, which names them instead."""
    entries = activity_log.activity(db.session, segment, limit=50)
    moving = [e for e in entries if e.kind in MOVING_KINDS]
    moving += [e for e in entries if e.kind == "created" and (e.detail or {}).get("rollout_percent")]
    return sorted(moving, key=lambda e: e.id, reverse=True)[:limit]


@bp.app_template_global()
def segment_schedule(segment: Segment) -> list[tuple[Any, str]]:
    now = utcnow()
    return [(entry, schedules.status(entry, now)) for entry in schedules.listing(db.session, segment)]


@bp.app_template_global()
def next_rollout_steps(items: list[Segment]) -> dict[int, Any]:
    """Each segment's next scheduled rollout change still ahead, by id (the list's Rollout column)."""
    return schedules.next_steps(db.session, [s.id for s in items])


@bp.app_template_global()
def next_rollout_step(segment: Segment) -> Any:
    """The segment's next scheduled rollout change, or None (the segment page's Rollout card)."""
    return schedules.next_steps(db.session, [segment.id]).get(segment.id)


@bp.app_template_global()
def segments_reach(items: list[Segment], counts: dict[int, int] | None = None) -> dict[int, reach.Reach]:
    return reach.reach_of(db.session, items, counts)


@bp.app_template_global()
def group_names() -> list[str]:
    return [view.name for view in groups.list_groups(db.session)]


def scheduled_for(d: dict[str, Any]) -> str:
    """A scheduled change's time in the activity log: in the viewer's zone (``moment_html``)."""
    try:
        return moment_html(datetime.fromisoformat(str(d.get("scheduled_for")).replace("Z", "+00:00")))
    except ValueError:
        return moment_text(str(d.get("scheduled_for")))


@bp.app_template_filter("activity_text")
def activity_text(event: Any) -> str:
    """One activity entry in words."""
    d: dict[str, Any] = event.detail or {}

    def pct(value: Any) -> str:
        return f"{float(value or 0):g}%"

    count = f"{int(d.get('count', d.get('total', 0)) or 0):,}"
    texts = {
        "created": lambda: (
            "Created"
            + (f" with a {pct(d.get('rollout_percent'))} rollout" if d.get("rollout_percent") else "")
            + (f" in group {d['exclusion_group']}" if d.get("exclusion_group") else "")
        ),
        "description_changed": lambda: (
            "Description changed" + (f" to “{d['after']}”" if d.get("after") else " (now empty)")
        ),
        "rollout_changed": lambda: (
            f"Rollout changed from {pct(d.get('from_percent'))} to {pct(d.get('to_percent'))}"
            + (" (scheduled)" if d.get("scheduled") else "")
        ),
        "group_changed": lambda: (
            f"Moved from group {d['before']} to {d['after']}"
            if d.get("before") and d.get("after")
            else f"Moved into group {d['after']}"
            if d.get("after")
            else f"Taken out of group {d.get('before')}"
        ),
        "rules_changed": lambda: (
            "Rules removed: answering by its rollout"
            if d.get("rules") is None
            else f"Rules set ({len(d['rules'])} rule{'s' if len(d['rules']) != 1 else ''}); users evaluated again"
        ),
        "members_added": lambda: (
            f"Bulk import of {_ids(d)}"
            + (
                f" ({int(d['skipped']):,} skipped: already in another segment of group {d.get('exclusion_group')})"
                if d.get("skipped")
                else ""
            )
        ),
        "members_removed": lambda: f"Bulk removal of {_ids(d)}",
        "members_replaced": lambda: (
            f"Members replaced: {_count(d, 'added')} joined, {_count(d, 'removed')} left"
        ),
        "schedule_added": lambda: Markup("Scheduled {} for {}").format(
            pct(d.get("rollout_percent")), scheduled_for(d)
        ),
        "schedule_cancelled": lambda: Markup("Cancelled the change to {} scheduled for {}").format(
            pct(d.get("rollout_percent")), scheduled_for(d)
        ),
        "deleted": lambda: (
            f"Deleted with {_count(d, 'members')} explicit members"
            + (f" and a {pct(d.get('rollout_percent'))} rollout" if d.get("rollout_percent") else "")
            if "members" in d
            else "Deleted"
        ),
        "restored": lambda: (
            f"Restored with {_count(d, 'members')} explicit members"
            + (f" ({_count(d, 'expired')} had expired while deleted)" if d.get("expired") else "")
            + (
                f", at 0%: group {d.get('exclusion_group')} had no room for its {pct(d.get('wanted_percent'))}"
                if d.get("wanted_percent") and not d.get("rollout_percent")
                else f" and a {pct(d.get('rollout_percent'))} rollout"
                if d.get("rollout_percent")
                else ""
            )
            + (" (members coming back in the background)" if d.get("background") else "")
        ),
    }
    text = texts.get(event.kind)
    return (
        text()
        if text
        else event.kind.replace("_", " ").capitalize() + (f" ({count})" if d.get("count") else "")
    )


def _ids(detail_: dict[str, Any]) -> str:
    """ "1 id", "2,000 ids": the count of a bulk entry with its noun."""
    count = _count(detail_, "count")
    return f"{count} id" if count == "1" else f"{count} ids"


def _count(detail_: dict[str, Any], preferred: str) -> str:
    for name in (preferred, "count", "received", "total"):
        if isinstance(detail_.get(name), int):
            return f"{detail_[name]:,}"
    return "some"


# -- groups ----------------------------------------------------------------------------------------


def bar_parts(view: groups.GroupView) -> list[dict[str, Any]]:
    """The group's bar: each range of each segment as a positioned span (left and width in % of
    10,000 buckets), the segments in a stable colour order."""
    parts = []
    for index, share in enumerate(view.shares):
        for start, end in share.ranges:
            parts.append(
                {
                    "slug": share.slug,
                    "colour": index % 8,
                    "left": start * 100 / BUCKETS,
                    "width": (end - start) * 100 / BUCKETS,
                    "start": start,
                    "end": end,
                }
            )
    return parts


@bp.app_template_global()
def group_bar(view: groups.GroupView) -> list[dict[str, Any]]:
    return bar_parts(view)


@bp.get("/groups")
def groups_index():
    return render_template("groups/index.html", views=groups.list_groups(db.session))


@bp.get("/groups/<name>")
def show_group(name: str):
    try:
        view = groups.get_group(db.session, name)
    except NotFound:
        upper = upper_slug(name)
        if upper:
            raise NotFound(
                f"Group names are written in upper case: there is no group called {name}.",
                [{"offer": url_for("web.show_group", name=upper), "message": f"Open {upper}"}],
            ) from None
        raise NotFound(f"There is no exclusion group called {name[:80]}.") from None
    return render_template("groups/show.html", view=view)


# -- the segment page's parts -------------------------------------------------------------------------


def _segment(slug: str) -> Segment:
    return live_segment(slug)


@bp.get("/segments/<slug>/activity")
def segment_activity(slug: str):
    return render_template("segments/_activity.html", segment=_segment(slug))


@bp.get("/segments/<slug>/reach")
def segment_reach(slug: str):
    return render_template("segments/_reach.html", segment=_segment(slug))


@bp.get("/segments/<slug>/schedule")
def segment_schedule_part(slug: str):
    segment = _segment(slug)
    if not is_htmx():
        return redirect(url_for("web.show_segment", slug=segment.slug) + "#schedule")
    return render_template("segments/_schedule.html", segment=segment, errors={}, form={})


def browser_zone(name: str | None) -> ZoneInfo | None:
    """The browser's time zone, as static/local-time.js fills the forms' hidden ``zone`` field
    (an IANA name such as Europe/Berlin); None without JavaScript (times are then UTC, and the
    form says so)."""
    name = (name or "").strip()
    if not name:
        return None
    try:
        return ZoneInfo(name[:80])
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            f"unknown time zone {name[:80]!r}",
            [detail("at", "unknown time zone", code="date_invalid", value=name[:80])],
        ) from None


def _form_time(raw: str, zone: ZoneInfo | None) -> datetime:
    """A datetime-local value, in the browser's zone (UTC without one), or one with an offset;
    the moment in UTC (the one date rule, rules.in_utc: years 1..9999 in UTC)."""
    raw = raw.strip()
    if not raw:
        raise ValidationFailed(
            "choose a time", [detail("at", "a date and time with a timezone is required", code="date_naive")]
        )
    try:  # the one date rule: naive is UTC, an offset is converted, years 1..9999 in UTC
        value = parse_moment(raw)
        if zone is not None and datetime.fromisoformat(raw.replace("Z", "+00:00")).tzinfo is None:
            value = in_utc(value.replace(tzinfo=zone))  # the same wall-clock time, in the browser's zone
        return value
    except ValueError as exc:
        raise ValidationFailed(f"at {exc}", [detail("at", str(exc), code=problem_code(exc))]) from None


def when_words(at: datetime, zone: ZoneInfo | None) -> str:
    """A scheduled time in a message: in the browser's zone with UTC beside it, else in UTC."""
    if zone is None or zone.key in {"UTC", "Etc/UTC"}:
        return moment_words(at)
    return f"{moment_words(at, zone)} ({at:%H:%M} UTC)"


@bp.get("/segments/<slug>/schedule-impact")
def schedule_impact(slug: str):
    """The live count under the schedule form: what the typed step would move if it applied now
    (services.impact.preview_schedule, the API's dry run); nothing until both fields are filled."""
    segment = _segment(slug)
    context: dict[str, Any] = {"segment": segment}
    at, percent = request.args.get("at", "").strip(), request.args.get("rollout_percent", "").strip()
    if at and percent:
        try:
            zone = browser_zone(request.args.get("zone"))
            context["found"] = impact.preview_schedule(
                db.session, segment.slug, _form_time(at, zone), percent
            )
        except AppError as exc:
            context["problem"] = error_words(exc.message, exc.details)[0]
    return render_template("segments/_schedule_impact.html", **context)


@bp.post("/segments/<slug>/schedule")
@transactional
def add_schedule(slug: str):
    """Schedule a step; one that would take anyone out of the segment if it applied now is first
    shown with its numbers and added only once confirmed, against the catalog version those
    numbers were computed on (a newer one: the new numbers are shown to confirm again)."""
    back = url_for("web.show_segment", slug=slug) + "#schedule"
    segment = _segment(slug)
    percent = request.form.get("rollout_percent", "").strip()
    # confirmed: the numbers shown were of these very values (Confirm carries them)
    values = f"{request.form.get('at', '').strip()}|{percent}"
    confirmed = confirmed_version(request.form) if request.form.get("confirmed") == values else None
    try:
        if not percent:
            raise ValidationFailed(
                "no percentage",
                [detail("rollout_percent", "must be a number between 0 and 100", code="percent_invalid")],
            )
        zone = browser_zone(request.form.get("zone"))
        at = _form_time(request.form.get("at", ""), zone)
        if confirmed is None:
            found = impact.preview_schedule(db.session, segment.slug, at, percent)
            if found.leaving:
                return _schedule_confirm(segment, found)
        entry = schedules.add(
            db.session, segment.slug, at, percent, dashboard_actor(), expected_version=confirmed
        )
    except AppError as exc:
        if not catalog_moved(exc):
            return rejected(exc, back, "segments/_schedule.html", fields=SCHEDULE_FIELDS, segment=segment)
        abandon()
        try:
            found = impact.preview_schedule(db.session, segment.slug, at, percent)
        except AppError as again:  # the step no longer fits as it did
            return rejected(again, back, "segments/_schedule.html", fields=SCHEDULE_FIELDS, segment=segment)
        return _schedule_confirm(segment, found, changed_since=True)
    return _schedule_changed(f"{segment.slug} will change to {_when(entry, zone)}.", back, segment)


def _schedule_confirm(segment: Segment, found: impact.Impact, *, changed_since: bool = False):
    """The schedule card again with the step's count as of today to confirm (nothing added);
    without JavaScript, the whole segment page with that card."""
    context = {
        "schedule_form": request.form,
        "schedule_errors": {},
        "schedule_confirm": found,
        "schedule_changed_since": changed_since,
    }
    if is_htmx():
        return render_template("segments/_schedule.html", segment=segment, **context)
    return render_template("segments/show.html", **{**page_context(segment), **context})


@bp.post("/segments/<slug>/schedule/<schedule_id>/cancel")
@transactional
def cancel_schedule(slug: str, schedule_id: str):
    back = url_for("web.show_segment", slug=slug) + "#schedule"
    segment = _segment(slug)
    try:
        entry = schedules.cancel(
            db.session, segment.slug, ascii_int(schedule_id, 1, 2**63 - 1) or 0, dashboard_actor()
        )
    except (NotFound, Conflict) as exc:
        return rejected(exc, back, "segments/_schedule.html", fields=(), segment=segment)
    try:
        zone = browser_zone(request.form.get("zone"))
    except ValidationFailed:
        zone = None  # (only the message's wording: the change is cancelled either way)
    return _schedule_changed(f"The change to {_when(entry, zone)} is cancelled.", back, segment)


def _when(entry: RolloutSchedule, zone: ZoneInfo | None) -> str:
    """'5% on 8 Dec 2026, 10:00 CET': the step, in the browser's zone when it sent one."""
    return f"{entry.rollout_percent:g}% on {when_words(entry.at, zone)}"


def _schedule_changed(message: str, back: str, segment: Segment):
    """The schedule card again (its form empty) with ``message``, and the segment-changed event."""
    return updated(
        message, back, "segments/_schedule.html", trigger=CHANGED, segment=segment, errors={}, form={}
    )


# -- the 30-day chart: explicit members and the rollout, separately ----------------------------------


@bp.app_template_global()
def rollout_series(segment: Segment, series: list[Any]) -> list[float]:
    """The rollout percentage at the end of each day of ``series`` (the chart's days)."""
    return segment_trail.rollout_series(db.session, segment, [point.day for point in series])


@bp.app_template_global()
def nice_top(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1
    power = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power
