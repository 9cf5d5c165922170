"""``gunicorn tests.support.failing_wsgi:app``: the production app (wsgi.py) with the failing routes."""

from tests.support.failing_routes import register
from webapp import create_app

app = register(create_app())
