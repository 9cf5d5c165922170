"""Dashboard for product managers: server-rendered pages with htmx fragments, registered on the
blueprint (``blueprint.bp``)."""

from webapp.web import causes, deleted, demo, filters, plans, reports, segments, status, users, webhooks  # noqa: F401
from webapp.web.blueprint import bp

__all__ = ["bp"]
