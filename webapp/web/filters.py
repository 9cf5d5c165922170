"""Jinja filters for the dashboard."""
from __future__ import annotations

from datetime import datetime

from webapp.rules import MAX_BULK_IDS
from webapp.services.common import iso, utcnow
from webapp.web import bp


@bp.app_template_filter("reltime")
def reltime(value: datetime | None, now: datetime | None = None) -> str:
    """'in 3 h', '5 min ago', 'never'."""
    if value is None:
        return "never"
    seconds = (value - (now or utcnow())).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "in under a minute" if seconds > 0 else "just now"
    unit, size = next((u, s) for u, s in (("d", 86_400), ("h", 3_600), ("min", 60)) if span >= s)
    amount = f"{int(span // size)} {unit}"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


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
