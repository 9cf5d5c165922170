"""Dashboard pages."""
from __future__ import annotations

from flask import render_template

from webapp.extensions import db
from webapp.services import segments
from webapp.web import bp


@bp.get("/")
def index():
    items, total = segments.list_segments(db.session, "", 1, 50)
    counts = segments.member_counts(db.session, [s.id for s in items])
    return render_template("segments/index.html", segments=items, counts=counts, total=total)
