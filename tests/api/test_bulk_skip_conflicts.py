"""Bulk add into a segment of an exclusion group with ``skip_conflicts``: the users already in
another segment of the group are left out (counted as ``skipped`` in the answer, the background
operation and the segment's activity) and the others are added; without it the add is refused
whole (409 ``group_occupied``), as before. The service's conflict list (the dashboard's count,
sample and download) is checked against the reads."""

from __future__ import annotations

import sqlalchemy as sa

from webapp.jobs.worker import run_worker
from webapp.platform.extensions import db
from webapp.services.membership import bulk


def in_segment(client_or_api, ids, slug):
    """The ids whose reads (the batch lookup) show ``slug``."""
    found = set()
    for start in range(0, len(ids), 1000):
        chunk = list(ids[start : start + 1000])
        response = client_or_api.post("/api/v1/users/segments:lookup", json={"user_ids": chunk})
        assert response.status_code == 200, response.json
        for user in response.json["users"]:
            if any(s["slug"] == slug for s in user["segments"]):
                found.add(user["user_id"])
    return found


def members(slug):
    return set(
        db.session.scalars(
            sa.text(
                "SELECT m.user_id FROM memberships m JOIN segments s ON s.id = m.segment_id "
                "WHERE s.slug = :slug AND s.deleted_at IS NULL"
            ),
            {"slug": slug},
        )
    )


def added_activity(slug):
    return [
        row[0]
        for row in db.session.execute(
            sa.text(
                "SELECT detail FROM segment_events WHERE segment_slug = :slug AND kind = 'members_added' ORDER BY id"
            ),
            {"slug": slug},
        )
    ]


def history_rows(slug, users):
    return db.session.scalar(
        sa.text(
            "SELECT count(*) FROM membership_events WHERE segment_slug = :slug AND user_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"slug": slug, "ids": list(users)},
    )


def test_skip_conflicts_adds_the_others_and_says_how_many_it_left_out(api, client):
    api.segment("SKIP_A", exclusion_group="SKIPG")
    api.segment("SKIP_B", exclusion_group="SKIPG", rollout_percent=30)
    api.segment("SKIP_C", exclusion_group="SKIPG")
    listed = list(range(1, 301))
    through_rollout = in_segment(client, listed, "SKIP_B")
    outside = [u for u in listed if u not in through_rollout]
    explicit_c = outside[:3]
    for user in explicit_c:
        assert api.change(user, add=["SKIP_C"]).status_code == 200
    conflicting = through_rollout | set(explicit_c)
    assert 40 < len(through_rollout) < 140  # a 30% rollout over 300 ids

    refused = api.post("/segments/SKIP_A/members", {"user_ids": listed})
    assert refused.status_code == 409 and refused.json["error"]["details"][0]["code"] == "group_occupied"
    assert f"{len(conflicting):,} of the listed users" in refused.json["error"]["message"]
    assert members("SKIP_A") == set()

    done = api.post("/segments/SKIP_A/members", {"user_ids": [*listed, 1, 2], "skip_conflicts": True})
    assert done.status_code == 200, done.json
    assert done.json == {
        "segment": "SKIP_A",
        "received": 302,
        "added": 300 - len(conflicting),
        "updated": 0,
        "unchanged": 0,
        "skipped": len(conflicting),
    }
    assert members("SKIP_A") == set(listed) - conflicting
    # the skipped users are where they were, with no history in SKIP_A; the others read SKIP_A
    assert in_segment(client, listed, "SKIP_B") == through_rollout
    assert in_segment(client, listed, "SKIP_C") == set(explicit_c)
    assert in_segment(client, listed, "SKIP_A") == set(listed) - conflicting
    assert history_rows("SKIP_A", conflicting) == 0
    assert history_rows("SKIP_A", set(listed) - conflicting) == 300 - len(conflicting)
    (entry,) = added_activity("SKIP_A")
    assert entry["count"] == 300 - len(conflicting)
    assert entry["skipped"] == len(conflicting)
    assert entry["skipped_in"] == {"SKIP_B": len(through_rollout), "SKIP_C": 3}
    assert entry["exclusion_group"] == "SKIPG"
    # the activity says it in words on the segment page
    page = client.get("/segments/SKIP_A").get_data(as_text=True)
    assert f"({len(conflicting):,} skipped: already in another segment of group SKIPG)" in page


def test_skip_conflicts_when_every_listed_user_conflicts_adds_nobody(api):
    api.segment("ALL_A", exclusion_group="ALLG")
    api.segment("ALL_B", exclusion_group="ALLG")
    for user in (7, 8):
        assert api.change(user, add=["ALL_B"]).status_code == 200
    done = api.post("/segments/ALL_A/members", {"user_ids": [7, 8], "skip_conflicts": True})
    assert done.status_code == 200, done.json
    assert (done.json["added"], done.json["skipped"], done.json["unchanged"]) == (0, 2, 0)
    assert members("ALL_A") == set()


def test_skip_conflicts_outside_a_group_changes_nothing(api):
    api.segment("NOGROUP_A")
    api.segment("NOGROUP_B", rollout_percent=100)
    done = api.post("/segments/NOGROUP_A/members", {"user_ids": [1, 2, 3], "skip_conflicts": True})
    assert done.status_code == 200 and done.json["added"] == 3 and done.json["skipped"] == 0
    plain = api.post("/segments/NOGROUP_A/members", {"user_ids": [4]})
    assert plain.json["skipped"] == 0


def test_skip_conflicts_is_a_json_boolean_of_bulk_add_only(api):
    api.segment("STRICT_A", exclusion_group="STRICTG")
    wrong = api.post("/segments/STRICT_A/members", {"user_ids": [1], "skip_conflicts": "yes"})
    assert wrong.status_code == 422
    assert wrong.json["error"]["details"][0]["field"] == "skip_conflicts"
    assert wrong.json["error"]["details"][0]["code"] == "bool_type"
    replace = api.put("/segments/STRICT_A/members", {"user_ids": [1], "skip_conflicts": True})
    assert replace.status_code == 422 and replace.json["error"]["details"][0]["field"] == "skip_conflicts"
    assert members("STRICT_A") == set()


def test_the_openapi_document_describes_skip_conflicts_and_skipped(client):
    document = client.get("/api/openapi.json").json
    schemas = {  # (spectree names a model "<Name>.<hash>", a model nested in it "<Name>.<hash>.<Inner>")
        name.split(".")[0]: schema
        for name, schema in document["components"]["schemas"].items()
        if name.count(".") == 1
    }
    body = schemas["BulkAddMembers"]["properties"]["skip_conflicts"]
    assert body["type"] == "boolean" and body["default"] is False and "group_occupied" in body["description"]
    assert "skipped" in schemas["BulkOut"]["properties"]
    assert "skipped" in schemas["OperationOut"]["properties"]
    post = document["paths"]["/api/v1/segments/{slug}/members"]["post"]
    assert (
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .split("/")[-1]
        .startswith("BulkAddMembers.")
    )


def test_the_service_names_every_conflict_with_its_segment(api, client, db_session):
    api.segment("SVC_A", exclusion_group="SVCG")
    api.segment("SVC_B", exclusion_group="SVCG", rollout_percent=20)
    listed = list(range(1, 501))
    expected = in_segment(client, listed, "SVC_B")
    conflicts = bulk.conflicts_for(db.session, "SVC_A", listed)
    assert conflicts.group == "SVCG"
    assert conflicts.segment_of == dict.fromkeys(sorted(expected), "SVC_B")
    assert conflicts.by_segment() == {"SVC_B": len(expected)}
    assert conflicts.sample(5) == sorted(expected)[:5]
    assert bulk.conflicts_for(db.session, "SVC_B", listed).segment_of == {}  # nobody is in SVC_A


def test_a_background_add_skips_conflicts_and_counts_them(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "BIG_A", "exclusion_group": "BIGG"})
    client.post("/api/v1/segments", json={"slug": "BIG_B", "exclusion_group": "BIGG", "rollout_percent": 10})
    listed = list(range(1, 12_001))
    with redis_app.app_context():
        conflicting = in_segment(client, listed, "BIG_B")
    assert 1000 < len(conflicting) < 1400
    refused = client.post("/api/v1/segments/BIG_A/members", json={"user_ids": listed})
    assert refused.status_code == 409
    accepted = client.post(
        "/api/v1/segments/BIG_A/members", json={"user_ids": listed, "skip_conflicts": True}
    )
    assert accepted.status_code == 202, accepted.json
    assert accepted.json["total"] == 12_000 - len(conflicting)
    assert accepted.json["skipped"] == len(conflicting)
    run_worker(redis_app, burst=True, fork=False)
    state = client.get(accepted.json["status_url"]).json
    assert state["status"] == "finished", state
    assert (state["added"], state["skipped"]) == (12_000 - len(conflicting), len(conflicting))
    with redis_app.app_context():
        assert members("BIG_A") == set(listed) - conflicting
        (entry,) = added_activity("BIG_A")
        assert entry["skipped"] == len(conflicting) and entry["exclusion_group"] == "BIGG"
        assert entry["count"] == 12_000 - len(conflicting)
    assert in_segment(client, listed, "BIG_B") == conflicting
