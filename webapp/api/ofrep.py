"""OpenFeature's remote evaluation protocol (OFREP) under /ofrep/v1: any OpenFeature SDK with
an OFREP provider evaluates segments here, with no client code of ours.

- ``POST /ofrep/v1/evaluate/flags/{key}``: one segment for one user (also served by the layer
  in front of Flask, ``webapp/http/hot_path.py``, through the same reader call);
- ``POST /ofrep/v1/evaluate/flags``: every live segment for one user, with an ``ETag`` derived
  from the answer (``If-None-Match`` with it: 304);
- ``GET /ofrep/v1/configuration``: our name and capabilities.

The answers are the hot read's (``read_path.Reader.evaluate_flag``/``evaluate_flags``: the
same read); what they say is ``services/reads/ofrep.py``. These routes speak the protocol's error
format, not our envelope (``errors.ofrep_failure``, rendered by ``error_answers``), take the
token as ``Authorization: Bearer`` or ``X-API-Key``, any scope may call them, and they count as
hot reads for the rate limits (none unless ``RATELIMIT_HOT_PATH`` is set). They are described
by the protocol's own OpenAPI document (``docs/ofrep-openapi.yaml``), not by ours.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from webapp.api.helpers import consistency_token, reader
from webapp.api.hot_routes import OFREP_FLAG
from webapp.http.auth import READ, requires_scope, takes_api_key
from webapp.services.reads import ofrep

bp = Blueprint("ofrep", __name__, url_prefix="/ofrep/v1")
ENDPOINTS = frozenset({OFREP_FLAG.endpoint, "ofrep.evaluate_flags", "ofrep.configuration"})


@OFREP_FLAG.route(bp)
@requires_scope(READ)  # (a POST that only reads: every scope may evaluate)
@takes_api_key
def evaluate_flag(key: str) -> Response:
    """One segment for the user in ``context.targetingKey`` (as the layer in front of Flask answers)."""
    status, body = reader().evaluate_flag(key, request.get_data(), consistency_token())
    return Response(body, status, mimetype="application/json")


@bp.post("/evaluate/flags")
@requires_scope(READ)
@takes_api_key
def evaluate_flags() -> Response:
    """Every live segment for the user in ``context.targetingKey``; 304 when ``If-None-Match``
    names the answer's ``ETag``."""
    status, body = reader().evaluate_flags(request.get_data(), consistency_token())
    if status != 200:
        return Response(body, status, mimetype="application/json")
    return _tagged(body)


@bp.get("/configuration")
@requires_scope(READ)
@takes_api_key
def configuration() -> Response:
    """Our name, and what providers may do: poll bulk evaluation, never cache an evaluation."""
    return _tagged(ofrep.configuration(current_app.config["OFREP_MIN_POLLING_INTERVAL_MS"]))


def _tagged(body: bytes) -> Response:
    """``body`` with its ``ETag``, or 304 (no body) when the request's ``If-None-Match`` names it."""
    tag = ofrep.etag(body)
    if ofrep.matches(request.headers.get("If-None-Match"), tag):
        response = Response(status=304)
    else:
        response = Response(body, mimetype="application/json")
    response.headers["ETag"] = tag
    return response
