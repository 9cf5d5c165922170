"""The impact tests' yardsticks: every known user, a preview's moves, and the moves the history
records at one instant (what a preview must equal)."""

from __future__ import annotations

import re
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


def history_counts(app, users, since: datetime) -> Counter:
    """{(segment, action): entries} in the history of ``users`` since ``since`` (what the
    dashboard's numbers must equal once a change is saved)."""
    from webapp.platform.extensions import db

    counts: Counter = Counter()
    with app.app_context():
        for user in users:
            for entry in history.user_history(db.session, user, start=since):
                counts[(entry.segment, entry.operation)] += 1
        db.session.remove()
    return counts


def shown_moves(text: str, slug: str, verb: str = "will") -> tuple[int, int]:
    """(leaving, joining) of ``slug`` in the dashboard's words (its own or another segment's);
    (0, 0) when the text names no move of it."""
    text = " ".join(text.split())
    own = re.search(rf"([\d,]+) {verb} leave, ([\d,]+) {verb} join {slug}\b", text)
    other = re.search(rf"([\d,]+) {verb} leave and ([\d,]+) join {slug}\b", text)
    found = own or other
    if not found:
        return 0, 0
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))
