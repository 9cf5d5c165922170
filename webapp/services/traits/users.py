"""One user's traits: read, replace (PUT), merge (PATCH: ``null`` deletes a key), delete all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from webapp.errors import Detail, ValidationFailed, detail
from webapp.models import Segment, UserTraits
from webapp.models.enums import TraitImportMode
from webapp.rules import MAX_TRAITS_PER_USER, trait_problems
from webapp.services.common import DbSession, check_user_id
from webapp.services.membership.rules import ruleset_of
from webapp.services.traits import store
from webapp.services.traits.store import CLEAR, Traits, TraitWrite

MAX_DETAIL_KEY = 80  # characters of a refused key repeated in an error detail


@dataclass
class TraitsView:
    """A user's traits now (empty and ``updated_at`` None: none stored)."""

    user_id: int
    traits: Traits
    updated_at: datetime | None


@dataclass
class TraitsChanged(TraitsView):
    """A write's answer: the traits after it, and which keys it set and deleted."""

    set_keys: list[str] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)


def problem_details(
    traits: object, *, merge: bool, field_prefix: str = "traits", **params: object
) -> list[Detail]:
    """webapp.rules.trait_problems as error details: ``traits`` for the object, ``traits.<key>``
    for a key or its value (the key repeated, cut to MAX_DETAIL_KEY characters)."""
    return [
        detail(
            field_prefix if p.key is None else f"{field_prefix}.{p.key[:MAX_DETAIL_KEY]}",
            p.message,
            code=p.code,
            **params,
            **({} if p.key is None else {"key": p.key[:MAX_DETAIL_KEY]}),
        )
        for p in trait_problems(traits, merge=merge)
    ]


def get_traits(session: DbSession, user_id: int) -> TraitsView:
    check_user_id(user_id)
    row = session.get(UserTraits, user_id)
    return TraitsView(user_id, dict(row.traits), row.updated_at) if row else TraitsView(user_id, {}, None)


def replace_traits(session: DbSession, user_id: int, traits: object, *, actor: str) -> TraitsChanged:
    """The user's traits become ``traits`` (every problem named first; nothing written then)."""
    return _write(session, user_id, traits, TraitImportMode.REPLACE, actor)


def patch_traits(session: DbSession, user_id: int, traits: object, *, actor: str) -> TraitsChanged:
    """``traits`` merged into the user's (``None`` deletes a key); 422 ``too_many_traits`` when
    the result would hold more than MAX_TRAITS_PER_USER keys."""
    return _write(session, user_id, traits, TraitImportMode.MERGE, actor)


def delete_traits(session: DbSession, user_id: int, *, actor: str) -> TraitsChanged:
    """Every trait of the user removed (personal data must be removable): ``deleted_keys``
    names them; nothing to delete is not an error."""
    check_user_id(user_id)
    result = store.write(session, [TraitWrite(user_id, {}, CLEAR)], actor=actor)
    change = result.changed[0] if result.changed else None
    return TraitsChanged(user_id, {}, None, [], change.deleted_keys if change else [])


def _write(
    session: DbSession, user_id: int, traits: object, mode: TraitImportMode, actor: str
) -> TraitsChanged:
    check_user_id(user_id)
    problems = problem_details(traits, merge=mode == TraitImportMode.MERGE)
    if problems:
        raise ValidationFailed("no trait was changed: fix the listed items", problems)
    assert isinstance(traits, Mapping)
    result = store.write(session, [TraitWrite(user_id, traits, mode)], actor=actor, stored=True)
    if result.too_many:
        raise ValidationFailed(
            f"no trait was changed: the user would hold more than {MAX_TRAITS_PER_USER} keys",
            [
                detail(
                    "traits",
                    f"the merge would leave more than {MAX_TRAITS_PER_USER} keys",
                    code="too_many_traits",
                    max=MAX_TRAITS_PER_USER,
                )
            ],
        )
    after, updated_at = result.stored.get(user_id, ({}, None))  # (as stored: what a read answers)
    change = result.changed[0] if result.changed else None
    return TraitsChanged(
        user_id,
        dict(after),
        updated_at,
        change.set_keys if change else [],
        change.deleted_keys if change else [],
    )


def sorted_traits(traits: Mapping[str, Any]) -> dict[str, Any]:
    return {key: traits[key] for key in sorted(traits)}


def why_by_rules(session: DbSession, slugs: Sequence[str], traits: Mapping[str, Any]) -> dict[str, str]:
    """Why a user is in each of ``slugs`` (segments the user is in through their rules) in plain
    words, from the user's ``traits`` now: the first rule they match, explained, and the
    segment's percentage when it takes less than everyone the rules match — "rule 2: country in
    [RU, BY] and plan = paid; in the 10% rollout". When the rules in force no longer match (a
    re-evaluation has not reached the user yet), it says so."""
    if not slugs:
        return {}
    found = session.execute(
        select(Segment.slug, Segment.rules, Segment.rollout_basis_points).where(
            Segment.is_live, Segment.slug.in_(list(slugs)), Segment.rules.is_not(None)
        )
    ).all()
    said: dict[str, str] = {}
    for slug, rules, basis_points in found:
        ruleset = ruleset_of(rules)
        index = ruleset.match(traits)
        if index is None:
            said[slug] = (
                "by an earlier evaluation of its rules: the re-evaluation has not reached this user yet"
            )
            continue
        share = "" if basis_points >= 10_000 else f"; in the {basis_points / 100:g}% rollout"
        said[slug] = f"rule {index + 1}: {ruleset.explain(index)}{share}"
    return said
