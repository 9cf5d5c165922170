"""Dashboard for product managers: server-rendered pages with htmx fragments."""
from flask import Blueprint

bp = Blueprint("web", __name__)

from webapp.web import filters, reports, segments, status, users  # noqa: E402,F401
