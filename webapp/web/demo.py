"""Dashboard: first run. An empty dashboard offers the demo data of `flask seed-demo` in one click."""

from __future__ import annotations

from flask import flash, redirect, url_for

from webapp.cli import seed_demo_data
from webapp.http.auth import dashboard_actor
from webapp.http.transaction import transactional
from webapp.platform.extensions import db
from webapp.web import bp


@bp.post("/demo-data")
@transactional
def load_demo_data():
    """The same segments and members as `flask seed-demo` (idempotent: a second load adds nothing)."""
    created = seed_demo_data(db.session, actor=dashboard_actor())
    flash(
        f"Demo data loaded: {created} segments, each with members; AVITO_DISCOUNT_50 has a 10% rollout."
        if created
        else "The demo segments are already there.",
        "success",
    )
    return redirect(url_for("web.index"))
