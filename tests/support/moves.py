"""The impact tests' yardsticks: every known user, a preview's moves, and the moves the history
records at one instant (what a preview must equal)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import text

from webapp.models.enums import Action
from webapp.services import impact
from webapp.services.history import replay as history


def known_users(session) -> list[int]:
    """Every user id the database knows (the impact's population), kept members of deleted
    segments included."""
    return list(
        session.scalars(
            text(
                "SELECT user_id FROM memberships UNION SELECT user_id FROM membership_events "
                "UNION SELECT user_id FROM rollout_exclusions UNION SELECT user_id FROM retired_memberships "
                "ORDER BY 1"
            )
        )
    )


def history_moves(session, users, at: datetime) -> dict[str, tuple[int, int]]:
    """{slug: (leaving, joining)} of the history entries stamped at ``at`` over ``users``."""
    counts: Counter[tuple[str, Action]] = Counter()
    for user in users:
        for entry in history.user_history(session, user, start=at, end=at + timedelta(microseconds=1)):
            counts[(entry.segment, entry.operation)] += 1
    slugs = {slug for slug, _ in counts}
    return {slug: (counts[(slug, Action.REMOVED)], counts[(slug, Action.ADDED)]) for slug in slugs}


def preview_moves(preview: impact.Impact) -> dict[str, tuple[int, int]]:
    """{slug: (leaving, joining)} of a preview, segments that move only."""
    return {m.slug: (m.leaving, m.joining) for m in preview.moves if m.leaving or m.joining}
