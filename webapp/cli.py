"""Flask CLI commands: worker, scheduler, expire-memberships, history repair, seed-demo."""

from __future__ import annotations

import time

import click
from flask import Flask

from webapp.platform.extensions import db


def register(app: Flask) -> None:
    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="exit when the queue is empty")
    @click.option("--no-fork", is_flag=True, help="run jobs in this process (debugging)")
    def worker_command(burst: bool, no_fork: bool) -> None:
        """Run an RQ worker (reports, nightly maintenance) with RQ's scheduler for retries."""
        from flask import current_app

        from webapp.jobs.worker import run_worker

        run_worker(current_app, burst=burst, fork=not no_fork)

    @app.cli.command("scheduler")
    @click.option("--no-catch-up", is_flag=True, help="do not run the nightly job once at start")
    def scheduler_command(no_catch_up: bool) -> None:
        """Register the nightly TTL expiry (EXPIRY_CRON, UTC) and serve the schedule."""
        from flask import current_app

        from webapp.jobs.schedule import run_scheduler

        try:
            run_scheduler(current_app, catch_up=not no_catch_up)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    @app.cli.command("expire-memberships")
    @click.option("--batch-size", type=int, default=None, help="rows per transaction")
    def expire_memberships_command(batch_size: int | None) -> None:
        """Remove expired memberships now (the nightly job does the same)."""
        from webapp.jobs.tasks import purge_expired

        started = time.perf_counter()
        removed = purge_expired(batch_size=batch_size)
        click.echo(f"expired {removed} memberships in {time.perf_counter() - started:.2f}s")

    @app.cli.group("history")
    def history_group() -> None:
        """Maintenance of the membership history."""

    @history_group.command("repair")
    @click.option("--apply", is_flag=True, help="write the fixes (default: a dry run that only counts)")
    def history_repair(apply: bool) -> None:
        """Find rows written before the one membership rule that moved nothing (doubled) and
        stop showing them in reports and segment activity; counts either way."""
        from webapp.services.history import replay as history

        started = time.perf_counter()
        counts = history.repair(db.session, apply=apply)
        if apply:
            db.session.commit()
        else:
            db.session.rollback()
        verb = "made" if apply else "would make"
        click.echo(
            f"{counts.users} users, {counts.rows} stored rows: {verb} {counts.hidden} doubled rows invisible "
            f"and {counts.shown} visible again ({time.perf_counter() - started:.2f}s)"
            + ("" if apply else "; dry run, run with --apply to write")
        )

    @app.cli.command("seed-demo")
    @click.option("--users", type=int, default=200, help="how many demo users to create")
    def seed_demo(users: int) -> None:
        """Create a few demo segments and memberships (idempotent)."""
        from webapp.services.demo import DEMO_SEGMENTS, seed_demo_data

        seed_demo_data(db.session, users)
        db.session.commit()
        click.echo(f"seeded {len(DEMO_SEGMENTS)} segments")
