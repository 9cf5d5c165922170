"""Flask extensions, created unbound and initialised in create_app()."""
from flask import request
from flask_caching import Cache
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from spectree import SpecTree
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def client_key() -> str:
    """Who a rate limit (or an idempotency key) counts against: the API token's name, else the IP."""
    from webapp.api.auth import token_name

    name = token_name()
    return f"token:{name}" if name else f"ip:{request.remote_addr}"


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
cache = Cache()
limiter = Limiter(key_func=client_key)
csrf = CSRFProtect()
spec = SpecTree(
    "flask",
    mode="strict",  # only the decorated API operations
    path="_spectree",  # spectree skips routes under its own path: keep it off /api
    page_templates={},  # /api/openapi.json and /api/docs (vendored Swagger UI) are ours
    title="Segments API",
    version="1.0.0",
    description="Dynamic user segmentation. Errors: {\"error\": {\"code\", \"message\", \"details\"}}.",
)
