"""Dashboard for product managers: server-rendered pages with htmx fragments, registered on the
blueprint (``blueprint.bp``)."""

from webapp.web import (  # noqa: F401
    causes,
    deleted,
    demo,
    filters,
    plans,
    reports,
    rules,
    segments,
    status,
    users,
    webhooks,
)
from webapp.web.blueprint import bp

__all__ = ["bp"]
