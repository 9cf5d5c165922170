"""Dashboard: first run. An empty dashboard offers the demo data in one click (the same data as
the developers' `flask seed-demo`)."""

from __future__ import annotations

from flask import flash, redirect, url_for

from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.platform.extensions import db
from webapp.services.demo import DEMO_SEGMENTS, seed_demo_data
from webapp.services.segments import lifecycle as segments
from webapp.web.blueprint import bp


@bp.post("/demo-data")
@transactional
def load_demo_data():
    """The demo segments and members (idempotent: a second load adds nothing)."""
    created = seed_demo_data(db.session, actor=dashboard_actor())
    flash(demo_words(created) if created else "The demo segments are already there.", "success")
    return redirect(url_for("web.index"))


def demo_words(created: int) -> str:
    """What the demo data holds, counted from the database: which segments have how many
    members, and which reach users only through their rollout."""
    live = [segments.get_live_segment(db.session, slug) for slug, *_ in DEMO_SEGMENTS]
    counts = segments.member_counts(db.session, [s.id for s in live])
    with_members = [s for s in live if counts[s.id]]
    parts = []
    if with_members:
        sizes = {counts[s.id] for s in with_members}
        names = _series([s.slug for s in with_members])
        if len(sizes) == 1 and len(with_members) > 1:
            parts.append(f"{names} have {sizes.pop():,} members each")
        else:
            parts.append(", ".join(f"{s.slug} has {counts[s.id]:,} members" for s in with_members))
    for s in live:
        if counts[s.id]:
            continue
        if s.rollout_basis_points:
            parts.append(
                f"{s.slug} has no members of its own: it reaches {s.rollout_percent:g}% of all users "
                "through its automatic rollout"
            )
        else:
            parts.append(f"{s.slug} has no members yet")
    plural = "s" if created != 1 else ""
    return f"Demo data loaded: {created} segment{plural}. " + "; ".join(parts) + "."


def _series(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
