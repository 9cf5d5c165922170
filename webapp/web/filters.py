"""Jinja filters for the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from markupsafe import Markup

from webapp.rules import MAX_BULK_IDS
from webapp.services.common import iso, utcnow
from webapp.web.blueprint import bp
from webapp.web.messages import error_words, plain


@bp.app_template_filter("reltime")
def reltime(value: datetime | None, now: datetime | None = None) -> str:
    """'in 3 h', '5 min ago', 'in 7 d', 'never': rounded to the nearest unit, so an expiry set
    7 days ahead reads "in 7 d" (not "6 d" a second later)."""
    if value is None:
        return "never"
    seconds = (value - (now or utcnow())).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "in under a minute" if seconds > 0 else "just now"
    amount = ""
    for unit, size, up_to in (("min", 60, 60), ("h", 3_600, 24), ("d", 86_400, None)):
        count = int(span / size + 0.5)
        if up_to is None or count < up_to:
            amount = f"{count:,} {unit}"
            break
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


@bp.app_template_filter("num")
def num(value: int | float | None) -> str:
    """1000000 -> '1,000,000' (counts; user ids are shown as they are)."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")


@bp.app_template_filter("month_name")
def month_name(period: str | None) -> str:
    """'2025-11' -> 'November 2025'."""
    try:
        return datetime.strptime(str(period), "%Y-%m").strftime("%B %Y")
    except ValueError:
        return str(period or "")


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


@bp.app_template_filter("utc_seconds")
def utc_seconds(value: datetime | None) -> str:
    """To the second: two reports requested in the same minute read apart."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


@bp.app_template_filter("moment_words")
def moment_words(value: datetime | None, zone: tzinfo | None = None, weekday: bool = False) -> str:
    """'8 Dec 2026, 10:00 UTC': the day, the month's name, the year (never read the wrong way
    round), in ``zone`` (UTC by default) with its name ('8 Dec 2026, 11:00 CET'); with
    ``weekday``, 'Tue 8 Dec 2026, 10:00 UTC'. In the page, static/local-time.js writes the same
    form in the browser's zone (``_macros/time.html``)."""
    if value is None:
        return "—"
    local = value.astimezone(zone or UTC)
    day = f"{local:%a} " if weekday else ""
    return f"{day}{local.day} {local:%b %Y, %H:%M} {local.tzname() or 'UTC'}"


@bp.app_template_global("moment")
def moment_html(value: datetime, weekday: bool = False) -> Markup:
    """A moment in the page: ``<time>`` with the UTC words (``moment_words``), which
    static/local-time.js rewrites in the browser's zone, named; the UTC time in its tooltip."""
    return Markup('<time datetime="{}" data-local="{}" title="{}">{}</time>').format(
        iso(value), "weekday" if weekday else "date", utc(value), moment_words(value, None, weekday)
    )


@bp.app_template_filter("isoz")
def isoz(value: datetime | None) -> str:
    return iso(value) or ""


@bp.app_template_filter("filesize")
def filesize(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


@bp.app_context_processor
def limits() -> dict[str, int]:
    """Limits the dashboard states in its forms (the same constants the services enforce)."""
    return {"MAX_BULK_IDS": MAX_BULK_IDS}


@bp.app_template_filter("plain")
def plain_words(message: object) -> str:
    """A stored message without a code (a job's error) as a sentence (see web.messages)."""
    return plain(message)


bp.add_app_template_global(error_words, "error_words")
