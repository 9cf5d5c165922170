"""The JSON API's blueprint (/api/v1): the route modules register on it; the package imports them."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
