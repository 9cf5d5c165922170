"""Dashboard for product managers: server-rendered pages with htmx fragments."""
from flask import Blueprint

bp = Blueprint("web", __name__)

from webapp.web import pages  # noqa: E402,F401
