"""Demo data: a few segments and members to try the dashboard and the API with (`flask seed-demo`
and the empty dashboard's button)."""

from __future__ import annotations

import contextlib
import random

from webapp.errors import Conflict
from webapp.models.enums import Reason
from webapp.services.common import DbSession
from webapp.services.membership import bulk
from webapp.services.segments import lifecycle as segments

DEMO_SEGMENTS = [
    ("AVITO_VOICE_MESSAGES", "Voice messages in chat", None),
    ("AVITO_PERFORMANCE_VAS", "Performance VAS", None),
    ("AVITO_DISCOUNT_30", "30% discount", None),
    ("AVITO_DISCOUNT_50", "50% discount", 10),
]


def seed_demo_data(session: DbSession, users: int = 200, actor: str = "seed-demo") -> int:
    """The demo segments and members of `flask seed-demo` (also the dashboard's first-run
    button, by whoever clicked it), in the caller's transaction; how many segments were created
    (0: already there)."""
    created = 0
    for slug, description, percent in DEMO_SEGMENTS:
        with contextlib.suppress(Conflict):  # already seeded
            segments.create_segment(session, slug, description, percent, actor=actor)
            created += 1
    rng = random.Random(42)
    for slug, *_ in DEMO_SEGMENTS[:3]:
        ids = rng.sample(range(1000, 1000 + users * 5), users)
        bulk.bulk_add(session, slug, ids, reason=Reason.DASHBOARD, actor=actor)
    return created
