"""The hot reads' routes, defined once: the Flask views are registered by them
(:meth:`HotRoute.route`, :meth:`FlagRoute.route`), the layer in front of Flask
(``webapp/http/hot_path.py``) matches requests against them, and the rate limiter and the
request metrics name them by the endpoints they give. The two reads of a user's segments
(``HOT_ROUTES``) and OpenFeature's single evaluation (``OFREP_FLAG``)."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState
from flask.sansio.scaffold import T_route
from werkzeug.routing import PathConverter

from webapp.rules import SLUG_PATTERN

DIGITS = "([0-9]{1,19})"  # the only form of id the layer in front of Flask takes; Flask checks the rest
VIEW = "user_segments"


class HotRoute:
    """One hot read: ``GET path`` served by ``<blueprint>.user_segments``, the user id in the
    path (``<user_id>``) or, with ``parameter``, as that query parameter."""

    def __init__(self, blueprint: str, path: str, *, parameter: str | None = None, compat: bool = False):
        self.blueprint, self.path, self.parameter, self.compat = blueprint, path, parameter, compat
        self.endpoint = f"{blueprint}.{VIEW}"  # Flask's name for it, the metrics' and the limiter's
        self._path = re.compile(re.escape(path).replace(re.escape("<user_id>"), DIGITS))
        self._query = re.compile(re.escape(f"{parameter}=") + DIGITS) if parameter else None

    def route(self, bp: Blueprint) -> Callable[[T_route], T_route]:
        """Register the view of this read on ``bp`` (which must be the route's blueprint, its
        prefix the start of the route's path)."""
        return bp.get(_rule(bp, self.blueprint, self.path), endpoint=VIEW)

    def user_id(self, path: str, query: str) -> str | None:
        """The id's digits when a request is this read in its plain form (the path exactly,
        and a query of nothing but the id when the id is a query parameter), else None."""
        match = self._path.fullmatch(path)
        if match is not None and self._query is not None:
            match = self._query.fullmatch(query)
        return None if match is None else match[1]

    def url(self, user_id: int | str) -> str:
        """This read's path (and query) for ``user_id``."""
        path = self.path.replace("<user_id>", str(user_id))
        return f"{path}?{self.parameter}={user_id}" if self.parameter else path


def _rule(bp: Blueprint, blueprint: str, path: str) -> str:
    """``path`` as a rule of ``bp``, which must be the blueprint named ``blueprint`` with its
    prefix the start of ``path``."""
    prefix = bp.url_prefix or ""
    if bp.name != blueprint or not path.startswith(prefix):
        raise RuntimeError(f"{path} is not a route of the blueprint {bp.name} at {prefix!r}")
    return path.removeprefix(prefix)


USER_SEGMENTS = HotRoute("api", "/api/v1/users/<user_id>/segments")
SEED_USER_SEGMENTS = HotRoute("api_compat", "/segment/user", parameter="id", compat=True)
HOT_ROUTES = (USER_SEGMENTS, SEED_USER_SEGMENTS)


class AnyKey(PathConverter):
    """A flag's key as Flask routes it: any text, slashes and line breaks included (``path``
    stops at a line break), the empty key too (``/evaluate/flags/``), so whatever key a client
    asks is answered by the view (FLAG_NOT_FOUND for one that is no slug), never by the
    router's 404."""

    regex = r"[\s\S]*?"
    part_isolating = False  # (werkzeug would infer True: the pattern has no "/" in it)


def _add_key_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("flag_key", AnyKey)


class FlagRoute:
    """OFREP's single evaluation: ``POST path`` served by ``<blueprint>.<view>``, the flag's key
    in the path (``<key>``: any text for Flask, a slug for the layer in front of it), the user
    in the JSON body; the token also taken as ``X-API-Key``."""

    def __init__(self, blueprint: str, path: str, view: str):
        self.blueprint, self.path, self.view = blueprint, path, view
        self.endpoint = f"{blueprint}.{view}"
        self._path = re.compile(re.escape(path).replace(re.escape("<key>"), f"({SLUG_PATTERN})"))

    def route(self, bp: Blueprint) -> Callable[[T_route], T_route]:
        """Register the view of this evaluation on ``bp`` (as :meth:`HotRoute.route`)."""
        bp.record_once(_add_key_converter)
        rule = _rule(bp, self.blueprint, self.path).replace("<key>", "<flag_key:key>")
        return bp.post(rule, endpoint=self.view)

    def key(self, path: str) -> str | None:
        """The flag's key when a request's path is this route with a slug for a key, else None."""
        match = self._path.fullmatch(path)
        return None if match is None else match[1]

    def url(self, key: str) -> str:
        return self.path.replace("<key>", key)


OFREP_FLAG = FlagRoute("ofrep", "/ofrep/v1/evaluate/flags/<key>", "evaluate_flag")
