"""Exclusion groups end to end (API on PostgreSQL): no user is ever in two segments of a
group, rollouts share 100%, raising keeps members, lowering removes only the latest."""

import itertools

import pytest

from webapp.platform.extensions import db
from webapp.services.reads.path import hot_lookup

USERS = range(1, 100_001)


def memberships(app, slugs):
    """{slug: set of users} over USERS through the hot read path (1,000 users per read)."""
    found = {slug: set() for slug in slugs}
    users = list(USERS)
    with app.app_context():
        engine = app.extensions["read_engine"]
        for start in range(0, len(users), 1000):
            chunk = users[start : start + 1000]
            for user, active in zip(chunk, hot_lookup(engine, chunk).answers(), strict=True):
                for entry in active:
                    if entry.slug in found:
                        found[entry.slug].add(user)
    return found


@pytest.fixture
def live(app_on, redis_app, committed_db):
    app = app_on()
    return app, app.test_client()


def test_the_assignment_example_has_no_overlap_in_a_group(live):
    app, client = live
    for slug in ("AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"):
        assert (
            client.post("/api/v1/segments", json={"slug": f"FREE_{slug}", "rollout_percent": 10}).status_code
            == 201
        )
        assert (
            client.post(
                "/api/v1/segments", json={"slug": slug, "rollout_percent": 10, "exclusion_group": "DISCOUNTS"}
            ).status_code
            == 201
        )
    found = memberships(
        app, ["FREE_AVITO_DISCOUNT_30", "FREE_AVITO_DISCOUNT_50", "AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"]
    )
    outside = len(found["FREE_AVITO_DISCOUNT_30"] & found["FREE_AVITO_DISCOUNT_50"])
    assert 800 < outside < 1200  # independent 10% rollouts: ~1% of users in both
    assert found["AVITO_DISCOUNT_30"].isdisjoint(found["AVITO_DISCOUNT_50"])
    for slug in ("AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"):
        assert 9_500 < len(found[slug]) < 10_500
    group = client.get("/api/v1/groups/DISCOUNTS").json
    assert group["used_percent"] == 20 and group["free_percent"] == 80
    assert {s["slug"] for s in group["segments"]} == {"AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"}


def test_every_combination_stays_disjoint_and_monotone(live):
    app, client = live
    slugs = ["G_A", "G_B", "G_C", "G_D"]
    for slug in slugs:
        client.post("/api/v1/segments", json={"slug": slug, "rollout_percent": 20, "exclusion_group": "EXP"})
    before = memberships(app, slugs)
    for a, b in itertools.combinations(slugs, 2):
        assert before[a].isdisjoint(before[b]), (a, b)
    assert client.patch("/api/v1/segments/G_A", json={"rollout_percent": 15}).status_code == 200  # frees 5%
    assert client.patch("/api/v1/segments/G_B", json={"rollout_percent": 25}).status_code == 200  # takes 10%
    after = memberships(app, slugs)
    assert after["G_A"] < before["G_A"] and before["G_B"] < after["G_B"]  # lowering removes, raising keeps
    assert after["G_C"] == before["G_C"] and after["G_D"] == before["G_D"]
    for a, b in itertools.combinations(slugs, 2):
        assert after[a].isdisjoint(after[b]), (a, b)
    # A raise back takes the lowest free buckets: G_A's removed users are not necessarily back,
    # but its remaining ones all stay.
    client.patch("/api/v1/segments/G_A", json={"rollout_percent": 20})
    again = memberships(app, slugs)
    assert after["G_A"] <= again["G_A"]
    full = client.patch("/api/v1/segments/G_C", json={"rollout_percent": 60})
    assert full.status_code == 422 and "EXP" in full.json["error"]["message"]
    assert full.json["error"]["details"][0]["exclusion_group"] == "EXP"


def test_explicit_add_into_a_group_is_refused_when_already_in_another(api):
    api.segment("EX_A", exclusion_group="EXCL")
    api.segment("EX_B", exclusion_group="EXCL", rollout_percent=100)
    api.segment("EX_C", exclusion_group="OTHER")
    refused = api.change(5, add=["EX_A"])  # in EX_B through its 100% rollout
    assert refused.status_code == 409, refused.json
    assert refused.json["error"]["details"][0]["segment"] == "EX_B"
    assert "EX_B" in refused.json["error"]["message"]
    assert api.patch("/segments/EX_B", {"rollout_percent": 0}).status_code == 200
    assert api.change(5, add=["EX_A", "EX_C"]).status_code == 200
    assert api.change(5, add=["EX_B"]).status_code == 409
    assert api.change(5, add=["EX_B"], delete=["EX_A"]).status_code == 200  # a swap in one call is fine
    assert [s["slug"] for s in api.active(5)] == ["EX_B", "EX_C"]


def test_explicit_members_win_over_the_groups_rollouts(api):
    api.segment("WIN_A", exclusion_group="WIN")
    assert api.change(9, add=["WIN_A"]).status_code == 200
    api.segment("WIN_B", exclusion_group="WIN", rollout_percent=99)  # buckets 0..9899: covers most users
    for user in (9, 10, 11):
        slugs = [s["slug"] for s in api.active(user) if s["slug"].startswith("WIN")]
        assert len(slugs) <= 1, (user, slugs)
    assert [s["slug"] for s in api.active(9)] == ["WIN_A"]


def test_moving_into_a_group_is_recorded_and_refused_on_explicit_overlap(api):
    api.segment("MOVE_A", exclusion_group="MV")
    api.segment("MOVE_B", rollout_percent=30)
    api.change(3, add=["MOVE_A", "MOVE_B"])
    refused = api.patch("/segments/MOVE_B", {"exclusion_group": "MV"})
    assert refused.status_code == 409 and refused.json["error"]["details"][0]["segment"] == "MOVE_A"
    api.change(3, delete=["MOVE_B"])
    moved = api.patch("/segments/MOVE_B", {"exclusion_group": "MV"})
    assert moved.status_code == 200 and moved.json["exclusion_group"] == "MV"
    kinds = [e["kind"] for e in api.get("/segments/MOVE_B/activity").json["items"]]
    assert kinds[0] == "group_changed" and "created" in kinds
    left = api.patch("/segments/MOVE_B", {"exclusion_group": None})
    assert left.status_code == 200 and left.json["exclusion_group"] is None
    assert api.get("/groups/MV").json["used_percent"] == 0


def test_history_shows_the_effect_of_joining_a_group(api):
    api.segment("HIST_A", rollout_percent=100)
    user = 42
    assert [s["slug"] for s in api.active(user)] == ["HIST_A"]
    api.segment("HIST_B", exclusion_group="HG", rollout_percent=100)
    api.patch("/segments/HIST_A", {"exclusion_group": "HG"})  # no room: the group is full
    assert api.patch("/segments/HIST_A", {"exclusion_group": "HG"}).status_code == 422
    api.patch("/segments/HIST_B", {"rollout_percent": 0})
    assert api.patch("/segments/HIST_A", {"exclusion_group": "HG"}).status_code == 200
    history = api.get(f"/users/{user}/history").json["items"]
    assert [(h["segment"], h["operation"]) for h in history] == [
        ("HIST_A", "added"),
        ("HIST_B", "added"),
        ("HIST_B", "removed"),
    ]


def test_group_names_follow_the_slug_rules(api):
    bad = api.post("/segments", {"slug": "BAD_GROUP", "exclusion_group": "lower case"})
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["field"] == "exclusion_group"
    assert api.get("/groups/NOPE").status_code == 404
    assert api.get("/groups/lower").status_code == 404


def test_a_raced_second_explicit_membership_still_reads_as_one(live):
    """Writes refuse a second segment of a group (409); should two writers ever race past that,
    every read still shows one: the group's first segment by slug."""
    app, client = live
    for slug in ("RACE_A", "RACE_B"):
        client.post("/api/v1/segments", json={"slug": slug, "exclusion_group": "RACE"})
    client.post("/api/v1/users/5/segments", json={"add": ["RACE_B"]})
    with app.app_context():
        db.session.execute(
            db.text(
                "INSERT INTO memberships (user_id, segment_id, added_at) SELECT 5, id, now() FROM segments "
                "WHERE slug = 'RACE_A'"
            )
        )
        db.session.commit()
    single = [s["slug"] for s in client.get("/api/v1/users/5/segments").json["segments"]]
    batch = client.post("/api/v1/users/segments:lookup", json={"user_ids": [5, 6]}).json["users"][0]
    assert single == ["RACE_A"] and [s["slug"] for s in batch["segments"]] == ["RACE_A"]


def test_bulk_add_and_replace_refuse_users_already_in_the_group(api):
    api.segment("BULK_G_A", exclusion_group="BULKG")
    api.segment("BULK_G_B", exclusion_group="BULKG", rollout_percent=50)
    in_b = [u for u in range(1, 200) if any(s["slug"] == "BULK_G_B" for s in api.active(u))]
    outside = [u for u in range(1, 200) if u not in in_b]
    assert api.change(outside[0], add=["BULK_G_A"]).status_code == 200
    for method in ("post", "put"):
        refused = getattr(api, method)("/segments/BULK_G_A/members", {"user_ids": [in_b[0], *outside[:5]]})
        assert refused.status_code == 409, refused.json
        assert refused.json["error"]["details"][0] == {
            "field": "user_ids",
            "message": "already in BULK_G_B, which shares exclusion group BULKG",
            "code": "group_occupied",
            "user_id": in_b[0],
            "segment": "BULK_G_B",
            "exclusion_group": "BULKG",
        }
    assert [m["user_id"] for m in api.get("/segments/BULK_G_A/members").json["items"]] == outside[
        :1
    ]  # nothing written
    assert api.post("/segments/BULK_G_A/members", {"user_ids": outside[:5]}).status_code == 200
    assert api.put("/segments/BULK_G_A/members", {"user_ids": outside[:3]}).status_code == 200


def test_the_settings_preview_counts_what_reads_will_show(live):
    app, client = live
    client.post("/api/v1/segments", json={"slug": "PRE_A", "rollout_percent": 30, "exclusion_group": "PRE"})
    client.post("/api/v1/segments", json={"slug": "PRE_B", "rollout_percent": 25, "exclusion_group": "PRE"})
    from webapp.models import Segment
    from webapp.services.segments import rollout_state

    sample = list(range(1, 2001))
    shown = memberships_of(app, sample, "PRE_B")
    with app.app_context():
        segment = db.session.query(Segment).filter_by(slug="PRE_B").one()
        assert rollout_state.preview_share(db.session, segment, 2500, 2000) == len(shown)
        raised = rollout_state.preview_share(db.session, segment, 4000, 2000)
    client.patch("/api/v1/segments/PRE_B", json={"rollout_percent": 40})
    assert raised == len(memberships_of(app, sample, "PRE_B"))


def memberships_of(app, users, slug):
    with app.app_context():
        answers = hot_lookup(app.extensions["read_engine"], users).answers()
    return {u for u, active in zip(users, answers, strict=True) if any(a.slug == slug for a in active)}
