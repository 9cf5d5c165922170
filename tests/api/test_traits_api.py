"""User traits (issue 29, stage 1): PUT / PATCH / DELETE / GET, the trait history, every bad
item named, no 500 for anything a client sends (hypothesis), concurrent writers of one user."""

from __future__ import annotations

import json
import math
import threading

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.checks import assert_envelope
from webapp.platform.extensions import db
from webapp.rules import MAX_TRAIT_INTEGER, MAX_TRAITS_PER_USER, trait_problems


def put(api, user, traits, **kw):
    return api.put(f"/users/{user}/traits", {"traits": traits}, **kw)


def patch(api, user, traits, **kw):
    return api.patch(f"/users/{user}/traits", {"traits": traits}, **kw)


def history(api, user):
    response = api.get(f"/users/{user}/traits/history")
    assert response.status_code == 200, response.json
    return [(e["action"], e["keys"]) for e in response.json["items"]]


def test_put_patch_delete_and_the_history_of_keys_never_values(api):
    empty = api.get("/users/7/traits").json
    assert empty == {"user_id": 7, "traits": {}, "updated_at": None}
    first = put(api, 7, {"country": "RU", "plan": "paid", "age": 31, "beta": True, "ratio": 0.5})
    assert first.status_code == 200, first.json
    assert first.json["traits"] == {"age": 31, "beta": True, "country": "RU", "plan": "paid", "ratio": 0.5}
    assert (
        first.json["set_keys"] == ["age", "beta", "country", "plan", "ratio"]
        and first.json["deleted_keys"] == []
    )
    assert api.get("/users/7/traits").json["traits"] == first.json["traits"]
    # PATCH: set one, change one, delete one; the others stay
    second = patch(api, 7, {"plan": "free", "app_version": "5.2.1", "beta": None, "missing": None})
    assert second.status_code == 200, second.json
    assert second.json["traits"] == {
        "age": 31,
        "app_version": "5.2.1",
        "country": "RU",
        "plan": "free",
        "ratio": 0.5,
    }
    assert (second.json["set_keys"], second.json["deleted_keys"]) == (["app_version", "plan"], ["beta"])
    # the same values again: nothing changes, nothing recorded
    again = patch(api, 7, {"plan": "free"})
    assert (again.json["set_keys"], again.json["deleted_keys"]) == ([], [])
    # 1, 1.0 and true are three different values
    assert patch(api, 7, {"age": 31.0}).json["set_keys"] == ["age"]
    assert patch(api, 7, {"age": True}).json["set_keys"] == ["age"]
    # PUT replaces: keys not given go
    third = put(api, 7, {"country": "BY"})
    assert (third.json["set_keys"], third.json["deleted_keys"]) == (
        ["country"],
        ["age", "app_version", "plan", "ratio"],
    )
    gone = api.delete("/users/7/traits")
    assert gone.status_code == 200 and gone.json["deleted_keys"] == ["country"] and gone.json["traits"] == {}
    assert api.get("/users/7/traits").json == {"user_id": 7, "traits": {}, "updated_at": None}
    assert api.delete("/users/7/traits").json["deleted_keys"] == []  # nothing left: not an error
    assert history(api, 7) == [
        ("set", ["age", "beta", "country", "plan", "ratio"]),
        ("set", ["app_version", "plan"]),
        ("deleted", ["beta"]),
        ("set", ["age"]),
        ("set", ["age"]),
        ("set", ["country"]),
        ("deleted", ["age", "app_version", "plan", "ratio"]),
        ("cleared", ["country"]),
    ]
    items = api.get("/users/7/traits/history").json["items"]
    assert {e["actor"] for e in items} == {"api"} and all(e["operation"] is None for e in items)
    stored = db.session.execute(sa.text("SELECT * FROM trait_events")).mappings().all()
    assert not any("RU" in json.dumps(dict(row), default=str) for row in stored)  # never the values
    keys = set(db.session.scalars(sa.text("SELECT key FROM trait_keys")))
    assert keys == {"age", "app_version", "beta", "country", "plan", "ratio"}


def test_history_range_and_actor(api):
    put(api, 8, {"a": 1}, headers={"X-Actor": "crm-sync"})
    items = api.get("/users/8/traits/history?from=2000-01-01&to=2000-01-02").json["items"]
    assert items == []
    items = api.get("/users/8/traits/history").json["items"]
    assert [e["actor"] for e in items] == ["api (X-Actor: crm-sync)"]
    reversed_ = api.get("/users/8/traits/history?from=2030-01-02&to=2030-01-01")
    assert (
        reversed_.status_code == 422 and assert_envelope(reversed_)["details"][0]["code"] == "range_reversed"
    )


def test_every_bad_item_is_named_and_nothing_is_written(api):
    bad = {
        "ok": "fine",
        "1starts_with_digit": "x",
        "has space": 1,
        "k" * 65: 1,
        "nested": {"a": 1},
        "list": [1],
        "long": "x" * 257,
        "nul": "a\x00b",
        "big": MAX_TRAIT_INTEGER + 1,
        "huge": 1e300,
        "nothing": None,
    }
    response = put(api, 9, bad)
    error = assert_envelope(response)
    assert response.status_code == 422 and error["code"] == "validation_failed"
    found = {(d["field"], d["code"]) for d in error["details"]}
    assert found == {
        ("traits.1starts_with_digit", "trait_key_invalid"),
        ("traits.has space", "trait_key_invalid"),
        (f"traits.{'k' * 65}", "trait_key_invalid"),
        ("traits.nested", "trait_not_scalar"),
        ("traits.list", "trait_not_scalar"),
        ("traits.long", "trait_string_too_long"),
        ("traits.nul", "trait_string_nul"),
        ("traits.big", "trait_number_range"),
        ("traits.huge", "trait_number_range"),
        ("traits.nothing", "trait_null"),  # null deletes only in a PATCH
    }
    assert api.get("/users/9/traits").json["traits"] == {}
    # too many keys in one body; and too many once merged
    many = put(api, 9, {f"k{i}": i for i in range(MAX_TRAITS_PER_USER + 1)})
    assert many.status_code == 422 and assert_envelope(many)["details"][0]["code"] == "too_many_traits"
    assert put(api, 9, {f"k{i}": i for i in range(MAX_TRAITS_PER_USER)}).status_code == 200
    over = patch(api, 9, {"one_more": 1})
    assert over.status_code == 422 and assert_envelope(over)["details"][0]["code"] == "too_many_traits"
    assert patch(api, 9, {"one_more": 1, "k0": None}).status_code == 200  # a deletion makes room
    # not an object; unknown fields; bad user id
    assert put(api, 9, [1, 2]).status_code == 422
    assert api.put("/users/9/traits", {"traits": {}, "extra": 1}).status_code == 422
    assert api.put("/users/9/traits", {}).status_code == 422
    assert put(api, 0, {"a": 1}).status_code == 422
    assert api.get("/users/abc/traits").status_code == 422


@pytest.mark.parametrize(
    "raw",
    [
        b'{"traits": {"a": 1e400}}',  # Infinity by another name
        b'{"traits": {"a": NaN}}',
        b'{"traits": {"a": 123456789012345678901234567890}}',
        b'{"traits": {"a": "\\ud800"}}',  # a lone surrogate
        b'{"traits": {"\\ud800": 1}}',
        b'{"traits": {"a": 1, "a": 2}}',
        b'{"traits": {"a": "' + b"9" * 5000 + b'"}}',
        b'{"traits": {"a": ' + b"9" * 5000 + b"}}",
    ],
)
def test_hostile_numbers_and_strings_are_4xx(client, raw):
    for method in (client.put, client.patch):
        response = method("/api/v1/users/5/traits", data=raw, content_type="application/json")
        assert 400 <= response.status_code < 500, (raw[:60], response.status_code, response.data[:300])
        assert_envelope(response)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.text(max_size=70) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,70}", fullmatch=True)


def expected_after(before: dict, traits: object, merge: bool) -> dict | None:
    """What the rules say the user's traits become (None: refused)."""
    if trait_problems(traits, merge=merge):
        return None
    after = dict(before) if merge else {}
    for key, value in traits.items():  # type: ignore[union-attr]
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return None if len(after) > MAX_TRAITS_PER_USER else after


def same_json(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        type(a[k]) is type(b[k]) and (a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k])))
        for k in a
    )


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    traits=st.dictionaries(KEYS, JSON_VALUES, max_size=6) | JSON_VALUES,
    merge=st.booleans(),
)
def test_no_500_for_any_traits_and_accepted_means_stored(api, traits, merge):
    user = 4242
    before = api.get(f"/users/{user}/traits").json["traits"]
    try:
        raw = json.dumps({"traits": traits})
    except ValueError:
        return
    method = api.client.patch if merge else api.client.put
    response = method(f"/api/v1/users/{user}/traits", data=raw, content_type="application/json")
    assert response.status_code < 500, (traits, response.data[:300])
    expected = expected_after(before, json.loads(raw)["traits"], merge)
    if expected is None:
        assert response.status_code in (400, 422), (traits, response.json)
        assert_envelope(response)
        assert api.get(f"/users/{user}/traits").json["traits"] == before
    else:
        assert response.status_code == 200, (traits, response.json)
        assert same_json(api.get(f"/users/{user}/traits").json["traits"], expected)


def test_concurrent_merges_of_one_user_lose_nothing(redis_app, committed_db):
    """Eight threads each PATCH their own keys into one user, 25 times: every key survives (each
    merge reads and writes under the user's lock; without it, merges overwrite each other)."""
    client = redis_app.test_client()
    errors: list[object] = []

    def writer(n: int) -> None:
        for i in range(25):
            response = client.patch("/api/v1/users/77/traits", json={"traits": {f"t{n}_{i % 12}": i}})
            if response.status_code != 200:
                errors.append(response.json)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    traits = client.get("/api/v1/users/77/traits").json["traits"]
    last = {k: max(i for i in range(25) if i % 12 == k) for k in range(12)}  # each key's last value
    assert traits == {f"t{n}_{k}": last[k] for n in range(8) for k in range(12)}
    with redis_app.app_context():
        events = db.session.scalar(sa.text("SELECT count(*) FROM trait_events WHERE user_id = 77"))
    assert events == 8 * 25  # every merge changed a value: one row each, none lost or doubled


def test_a_trait_write_waits_for_the_users_membership_lock(redis_app, committed_db):
    """The trait write takes the lock a membership change of the same user holds."""
    from webapp.services.membership import store as membership_store

    client = redis_app.test_client()
    done = threading.Event()
    with redis_app.app_context():
        session = db.session
        membership_store.lock_user(session, 55)  # a membership writer of user 55, mid-transaction
        thread = threading.Thread(
            target=lambda: (client.put("/api/v1/users/55/traits", json={"traits": {"a": 1}}), done.set())
        )
        thread.start()
        assert not done.wait(1.0), "the trait write did not wait for the user's lock"
        session.rollback()  # the membership writer ends
        assert done.wait(10)
        thread.join()
    assert client.get("/api/v1/users/55/traits").json["traits"] == {"a": 1}
