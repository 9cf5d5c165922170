"""``gunicorn tests.faults.failing_wsgi:app``: the production app (wsgi.py) with the failing routes."""

from tests.faults.failing_routes import register
from webapp import create_app

app = register(create_app())
