"""JSON API under /api/v1: the blueprint (``blueprint.bp``) with every route module registered on it."""

from webapp.api import deleted, groups, impact, plans, reports, segments, traits, users, webhooks  # noqa: F401  (routes register on bp)
from webapp.api.blueprint import bp

__all__ = ["bp"]
