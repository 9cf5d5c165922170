"""/api/v1/users/<id>/traits and /api/v1/users/traits:import: user traits (issue 29)."""

from __future__ import annotations

from flask import request

from webapp.api import uploads
from webapp.api.blueprint import bp
from webapp.api.docs import operation, raw_body
from webapp.api.helpers import actor, json_body, out, query_time
from webapp.api.schemas import (
    HistoryQuery,
    OperationOut,
    TraitHistoryEntryOut,
    TraitHistoryOut,
    TraitImportQuery,
    TraitsChangeOut,
    TraitsOut,
    TraitsPatch,
    TraitsPut,
)
from webapp.api.segments import operation_out
from webapp.errors import ValidationFailed, detail
from webapp.http.transaction import transactional
from webapp.models.enums import TraitImportMode
from webapp.platform.extensions import db
from webapp.services.common import parse_user_id
from webapp.services.traits import history, imports
from webapp.services.traits import users as traits
from webapp.services.traits.users import TraitsChanged, TraitsView

TAGS = ("traits",)
IMPORT_PATH = "/users/traits:import"


def traits_out(view: TraitsView) -> TraitsOut:
    return TraitsOut(
        user_id=view.user_id, traits=traits.sorted_traits(view.traits), updated_at=view.updated_at
    )


def change_out(result: TraitsChanged) -> TraitsChangeOut:
    return TraitsChangeOut(
        user_id=result.user_id,
        traits=traits.sorted_traits(result.traits),
        updated_at=result.updated_at,
        set_keys=result.set_keys,
        deleted_keys=result.deleted_keys,
    )


@bp.get("/users/<user_id>/traits")
@operation(tags=TAGS, ok=(200, TraitsOut))
def get_traits(user_id: str):
    """The user's traits (``{}`` and ``updated_at`` null when none are stored)."""
    return out(traits_out(traits.get_traits(db.session, parse_user_id(user_id))))


@bp.put("/users/<user_id>/traits")
@operation(tags=TAGS, json=TraitsPut, ok=(200, TraitsChangeOut))
@transactional
def put_traits(user_id: str):
    """Replace the user's traits: afterwards they are exactly ``traits``. Every bad key and
    value is named (422); nothing is written then."""
    uid = parse_user_id(user_id)
    body = json_body(TraitsPut)
    return out(change_out(traits.replace_traits(db.session, uid, body.traits, actor=actor())))


@bp.patch("/users/<user_id>/traits")
@operation(tags=TAGS, json=TraitsPatch, ok=(200, TraitsChangeOut))
@transactional
def patch_traits(user_id: str):
    """Merge into the user's traits: each key given is set, ``null`` deletes it, the others
    stay. The result holds at most 100 keys (422 ``too_many_traits``)."""
    uid = parse_user_id(user_id)
    body = json_body(TraitsPatch)
    return out(change_out(traits.patch_traits(db.session, uid, body.traits, actor=actor())))


@bp.delete("/users/<user_id>/traits")
@operation(tags=TAGS, ok=(200, TraitsChangeOut))
@transactional
def delete_traits(user_id: str):
    """Remove every trait of the user (``deleted_keys`` names them); the history keeps which
    keys they were, never their values."""
    uid = parse_user_id(user_id)
    return out(change_out(traits.delete_traits(db.session, uid, actor=actor())))


@bp.get("/users/<user_id>/traits/history")
@operation(tags=TAGS, query=HistoryQuery, ok=(200, TraitHistoryOut))
def trait_history(user_id: str):
    """The user's trait changes in ``[from, to)``, oldest first: which keys, how, by whom (never
    the values)."""
    uid = parse_user_id(user_id)
    start, end = query_time("from"), query_time("to")
    if start and end and start >= end:
        raise ValidationFailed(
            "from must be before to", [detail("from", "must be before to", code="range_reversed")]
        )
    items = [
        TraitHistoryEntryOut(
            keys=e.keys,
            action=e.action,
            actor=e.actor,
            occurred_at=e.occurred_at,
            operation=str(e.operation_id) if e.operation_id else None,
        )
        for e in history.trait_history(db.session, uid, start, end)
    ]
    return out(TraitHistoryOut(user_id=uid, start=start, end=end, items=items))


IMPORT_BODY = {
    "required": True,
    "description": 'JSON lines (one `{"user_id": 1, "traits": {...}}` per line) or CSV (header '
    "`user_id,<key>[:string|number|boolean],...`), up to 1,000,000 users, each once; see docs/api.md",
    "content": {
        imports.JSON_LINES: {"schema": {"type": "string"}},
        imports.CSV: {"schema": {"type": "string"}},
    },
}


@bp.post(IMPORT_PATH)
@uploads.accepts_upload(*imports.FORMATS, limit_setting="TRAIT_IMPORT_MAX_BYTES")
@raw_body(f"/api/v1{IMPORT_PATH}", "post", IMPORT_BODY)
@operation(tags=TAGS, query=TraitImportQuery, accepted=OperationOut)
@transactional
def import_traits():
    """Import many users' traits from a file (JSON lines or CSV; ``mode`` replace or merge): the
    whole file is checked first (422 naming the first 100 problems by line, nothing imported),
    then applied in the background: 202 with the operation (``Location``: poll it)."""
    raw_mode = request.args.get("mode", "")
    if raw_mode not in tuple(TraitImportMode):
        raise ValidationFailed(
            "mode must be replace or merge",
            [detail("mode", "must be replace or merge", code="mode_invalid", value=raw_mode[:40])],
        )
    spool = uploads.spooled()
    operation = imports.start_import(
        db.session, spool.file, request.mimetype, TraitImportMode(raw_mode), actor=actor()
    )
    accepted = operation_out(operation)
    return out(accepted, 202, {"Location": accepted.status_url})
