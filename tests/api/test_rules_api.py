"""Rules on segments through the API (issue 29, stages 2-3): every bad rule named, a rule
segment's answer, reads with source rule (OFREP's TARGETING_MATCH, source rule), history with
reason rule, the re-evaluation shown on the segment and as an operation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tests.services.test_rule_segments import run_operations
from tests.support.checks import assert_envelope
from tests.support.oracle import parse_time
from webapp.platform.extensions import db

ACTOR = "api (X-Actor: %s)"  # how an API call's actor is recorded
RU_PAID = [
    {
        "conditions": [
            {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
            {"trait": "plan", "operator": "str_eq", "value": "paid"},
        ]
    }
]


def test_bad_rules_are_refused_naming_every_problem_and_nothing_is_created(api):
    bad = [
        {"conditions": [{"trait": "app", "operator": "semver_gte", "value": "five"}]},
        {"conditions": [{"trait": "1nope", "operator": "regex", "value": ".*"}]},
        {"conditions": []},
    ]
    answer = api.post("/segments", {"slug": "R_BAD", "rules": bad})
    assert answer.status_code == 422, answer.json
    assert_envelope(answer)
    fields = {d["field"] for d in answer.json["error"]["details"]}
    assert {
        "rules[0].conditions[0].value",
        "rules[1].conditions[0].trait",
        "rules[1].conditions[0].operator",
    } <= fields
    assert any(f.startswith("rules[2]") for f in fields), fields
    assert all(d.get("code") for d in answer.json["error"]["details"])
    assert api.get("/segments/R_BAD").status_code == 404
    api.segment("R_OK")
    refused = api.patch("/segments/R_OK", {"rules": "country = RU"})
    assert refused.status_code == 422 and refused.json["error"]["details"][0]["code"], refused.json


def test_a_rule_segment_through_the_api(api, client):
    for user, traits in {1: {"country": "RU", "plan": "paid"}, 2: {"country": "US", "plan": "paid"}}.items():
        assert api.put(f"/users/{user}/traits", {"traits": traits}).status_code == 200
    created = api.post("/segments", {"slug": "R_API", "rules": RU_PAID})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["rules"] == RU_PAID and body["rollout_percent"] == 100 and body["answers_by_rules"]
    assert body["reevaluation"]["kind"] == "reevaluate_rules" and body["reevaluation"]["status"] == "queued"
    assert body["rules_matching"] == 1
    assert api.active(1) == []  # not evaluated yet: not in
    run_operations(db.session)
    assert api.active(1) == [{"slug": "R_API", "source": "rule", "expires_at": None}]
    assert api.active(2) == []
    assert api.get("/segments/R_API").json["reevaluation"] is None
    lookup = api.post("/users/segments:lookup", {"user_ids": [1, 2]}).json
    assert [u["segments"] for u in lookup["users"]] == [
        [{"slug": "R_API", "source": "rule", "expires_at": None}],
        [],
    ]
    flag = client.post("/ofrep/v1/evaluate/flags/R_API", json={"context": {"targetingKey": "1"}}).json
    assert (flag["value"], flag["reason"], flag["metadata"]["source"]) == (True, "TARGETING_MATCH", "rule")

    # a trait change moves user 2 in, at once; history says why
    assert (
        api.patch("/users/2/traits", {"traits": {"country": "BY"}}, headers={"X-Actor": "crm"}).status_code
        == 200
    )
    assert api.active(2) == [{"slug": "R_API", "source": "rule", "expires_at": None}]
    items = api.get("/users/2/history").json["items"]
    assert [(i["segment"], i["operation"], i["reason"]) for i in items] == [("R_API", "added", "rule")]
    changed = api.get("/users/2/traits/history").json["items"][-1]
    assert items[0]["cause"] == {
        "kind": "traits",
        "segment": "R_API",
        "at": changed["occurred_at"],
        "actor": ACTOR % "crm",
        "keys": ["country"],
        "from_percent": None,
        "to_percent": None,
        "from_group": None,
        "to_group": None,
        "schedule_id": None,
    }

    # schedules do not combine with rules
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused = api.post("/segments/R_API/schedule", {"at": soon, "rollout_percent": 5})
    assert refused.status_code == 409 and refused.json["error"]["details"][0]["code"] == "rules_with_schedule"

    # the rules removed: a 100% rollout, everyone in at once (without traits too)
    plain = api.patch("/segments/R_API", {"rules": None})
    assert plain.status_code == 200 and plain.json["rules"] is None and not plain.json["answers_by_rules"]
    assert api.active(3) == [{"slug": "R_API", "source": "rollout", "expires_at": None}]
    items = api.get("/users/3/history").json["items"]
    assert [(i["operation"], i["cause"]["kind"]) for i in items] == [("added", "rules")]


def test_the_dry_run_of_a_rule_change_says_who_moves_once_evaluated(api):
    traits = {
        1: {"country": "RU", "plan": "paid"},
        2: {"country": "BY", "plan": "free"},
        3: {"country": "US"},
    }
    for user, given in traits.items():
        assert api.put(f"/users/{user}/traits", {"traits": given}).status_code == 200
    api.segment("R_DRY", rollout_percent=100)
    preview = api.post("/segments/R_DRY/impact", {"change": "update", "rules": RU_PAID})
    assert preview.status_code == 200, preview.json
    body = preview.json
    assert body["eventual"] is True and (body["leaving"], body["joining"]) == (2, 0)  # users 2 and 3
    assert api.active(2) == [{"slug": "R_DRY", "source": "rollout", "expires_at": None}]  # nothing moved
    changed = api.patch(f"/segments/R_DRY?catalog_version={body['catalog_version']}", {"rules": RU_PAID})
    assert changed.status_code == 200, changed.json
    run_operations(db.session)
    assert [a["slug"] for a in api.active(1)] == ["R_DRY"] and api.active(2) == api.active(3) == []
    removal = api.post("/segments/R_DRY/impact", {"change": "update", "rules": None}).json
    assert removal["eventual"] is False and (removal["leaving"], removal["joining"]) == (0, 2)
    refused = api.post("/segments/R_DRY/impact", {"change": "update", "rules": [{"conditions": []}]})
    assert refused.status_code == 422 and refused.json["error"]["details"][0]["field"].startswith("rules[0]")
    assert_envelope(refused)


def test_a_rule_entry_names_the_change_that_caused_it_and_its_actor(api):
    """Issue 29, item 4: an entry with reason rule says which change moved the user: the user's
    trait change (its keys, its instant, its actor) or the segment's change (rules given at
    creation, rules changed, percentage changed), at the change's instant, not the instant the
    re-evaluation reached the user."""
    as_ = {"X-Actor": "pm@example.com"}
    for user in (1, 2):
        assert (
            api.put(f"/users/{user}/traits", {"traits": {"country": "RU", "plan": "paid"}}).status_code == 200
        )
    assert api.post("/segments", {"slug": "R_WHY", "rules": RU_PAID}, headers=as_).status_code == 201
    run_operations(db.session)
    activity = {a["kind"]: a for a in api.get("/segments/R_WHY/activity").json["items"]}

    def last(user):
        entry = api.get(f"/users/{user}/history").json["items"][-1]
        return entry["operation"], entry["reason"], entry["cause"]

    def said(user, *fields):  # the user's last entry: its operation and reason, then its cause's fields
        operation, reason, cause = last(user)
        return (operation, reason, *(cause[f] for f in fields))

    created = activity["created"]["occurred_at"]
    assert said(1, "kind", "actor", "at") == ("added", "rule", "created", ACTOR % "pm@example.com", created)

    # the rules changed by another actor: user 2 (plan paid, country RU) leaves when re-evaluated
    narrower = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "gold"}]}]
    assert api.patch("/segments/R_WHY", {"rules": narrower}, headers={"X-Actor": "alice"}).status_code == 200
    assert api.active(2) != []  # not re-evaluated yet: still in
    run_operations(db.session)
    edited = api.get("/segments/R_WHY/activity").json["items"][0]
    assert edited["kind"] == "rules_changed"
    removed = ("removed", "rule", "rules_changed", ACTOR % "alice", edited["occurred_at"])
    assert said(2, "kind", "actor", "at") == removed
    entry_at = api.get("/users/2/history").json["items"][-1][
        "occurred_at"
    ]  # when the operation reached user 2
    assert parse_time(entry_at) > parse_time(edited["occurred_at"])

    # a trait change moves user 2 back in: credited to it, with the keys (never the values)
    assert (
        api.patch(
            "/users/2/traits", {"traits": {"plan": "gold", "tier": 2}}, headers={"X-Actor": "crm"}
        ).status_code
        == 200
    )
    assert said(2, "kind", "actor", "keys") == ("added", "rule", "traits", ACTOR % "crm", ["plan", "tier"])
    # a percentage change: credited to it, with its percentages
    assert api.patch("/segments/R_WHY", {"rollout_percent": 0}, headers={"X-Actor": "bob"}).status_code == 200
    run_operations(db.session)
    cut = ("removed", "rule", "rollout", ACTOR % "bob", 100, 0)
    assert said(2, "kind", "actor", "from_percent", "to_percent") == cut
    # clearing the traits: credited to that change
    assert api.patch("/segments/R_WHY", {"rollout_percent": 100}).status_code == 200
    run_operations(db.session)
    assert api.delete("/users/2/traits", headers={"X-Actor": "privacy"}).status_code in (200, 204)
    cleared = ("removed", "rule", "traits", ACTOR % "privacy", ["country", "plan", "tier"])
    assert said(2, "kind", "actor", "keys") == cleared
    # a move into an exclusion group at 50%: the group's buckets decide now, credited to the move
    gold = {"traits": {"plan": "gold"}}
    assert all(api.put(f"/users/{u}/traits", gold).status_code == 200 for u in range(10, 50))
    assert api.patch("/segments/R_WHY", {"rollout_percent": 50}).status_code == 200
    run_operations(db.session)
    assert (
        api.patch("/segments/R_WHY", {"exclusion_group": "WHY_G"}, headers={"X-Actor": "carol"}).status_code
        == 200
    )
    run_operations(db.session)
    moved = [last(u) for u in range(10, 50)]
    by_group = [cause for _, _, cause in moved if cause["kind"] == "group"]
    assert by_group, moved  # (each of 40 users flips with probability 1/2)
    assert {(c["actor"], c["from_group"], c["to_group"]) for c in by_group} == {
        (ACTOR % "carol", None, "WHY_G")
    }
    # a rule row written before migration 0020 names no cause: shown as the user's own change
    db.session.execute(
        sa.text(
            "UPDATE membership_events SET cause = NULL, cause_at = NULL WHERE user_id = 2 AND reason = 'rule'"
        )
    )
    assert {e["cause"]["kind"] for e in api.get("/users/2/history").json["items"]} == {"change"}
