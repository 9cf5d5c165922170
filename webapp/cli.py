"""Flask CLI commands: expire-memberships, seed-demo."""
from __future__ import annotations

import contextlib
import random
import time

import click
from flask import Flask

from webapp.extensions import db


def register(app: Flask) -> None:
    @app.cli.command("expire-memberships")
    @click.option("--batch-size", type=int, default=None, help="rows per transaction")
    def expire_memberships_command(batch_size):
        """Remove expired memberships now (the nightly job does the same)."""
        from webapp.services.memberships import expire_memberships

        started = time.perf_counter()
        removed = expire_memberships(db.session, batch_size=batch_size, commit_each_batch=True)
        db.session.commit()
        click.echo(f"expired {removed} memberships in {time.perf_counter() - started:.2f}s")

    @app.cli.command("seed-demo")
    @click.option("--users", type=int, default=200, help="how many demo users to create")
    def seed_demo(users):
        """Create a few demo segments and memberships (idempotent)."""
        from webapp.errors import Conflict
        from webapp.services import memberships, segments

        demo = [("AVITO_VOICE_MESSAGES", "Voice messages in chat", None),
                ("AVITO_PERFORMANCE_VAS", "Performance VAS", None),
                ("AVITO_DISCOUNT_30", "30% discount", None),
                ("AVITO_DISCOUNT_50", "50% discount", 10)]
        for slug, description, percent in demo:
            with contextlib.suppress(Conflict):  # already seeded
                segments.create_segment(db.session, slug, description, percent)
        rng = random.Random(42)
        for slug, *_ in demo[:3]:
            ids = rng.sample(range(1000, 1000 + users * 5), users)
            memberships.bulk_add(db.session, slug, ids, reason="dashboard", actor="seed-demo")
        db.session.commit()
        click.echo(f"seeded {len(demo)} segments")
