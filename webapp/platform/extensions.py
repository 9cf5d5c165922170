"""Flask extensions, created unbound and initialised in create_app()."""

from typing import TYPE_CHECKING

from flask import current_app
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from spectree import SpecTree
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from webapp.http.auth import client_key

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
if TYPE_CHECKING:  # db.Model is built at run time; for the type checker it is the declarative base
    Model = Base
else:
    Model = db.Model
migrate = Migrate()
limiter = Limiter(key_func=client_key)
csrf = CSRFProtect()
# Each report costs a job: every view that creates one is limited per client (RATELIMIT_REPORTS).
report_requests = limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_REPORTS"],
    scope="reports",
    exempt_when=lambda: not current_app.config["RATELIMIT_REPORTS"],
)
spec = SpecTree(
    "flask",
    mode="strict",  # only the decorated API operations
    path="_spectree",  # spectree skips routes under its own path: keep it off /api
    page_templates={},  # /api/openapi.json and /api/docs (vendored Swagger UI) are ours
    title="Segments API",
    version="1.0.0",
    description='Dynamic user segmentation. Errors: {"error": {"code", "message", "details"}}.',
)
