import pytest


def test_create_get_and_list(api):
    created = api.segment("AVITO_VOICE_MESSAGES", description="Voice", rollout_percent=12.5)
    assert created["slug"] == "AVITO_VOICE_MESSAGES"
    assert created["rollout_percent"] == 12.5
    assert created["created_at"].endswith("Z")
    got = api.get("/segments/AVITO_VOICE_MESSAGES")
    assert got.status_code == 200
    assert got.json["description"] == "Voice" and got.json["member_count"] == 0
    listed = api.get("/segments").json
    assert listed["total"] == 1 and listed["items"][0]["slug"] == "AVITO_VOICE_MESSAGES"


@pytest.mark.parametrize("slug", ["lower", "1ABC", "A-B", "", "A" * 65, "ÄBC", "A B"])
def test_invalid_slug_is_422(api, slug):
    response = api.post("/segments", {"slug": slug})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_failed"
    assert response.json["error"]["details"][0]["field"] == "slug"


def test_duplicate_live_slug_is_409_and_reusable_after_delete(api):
    api.segment("DUP")
    again = api.post("/segments", {"slug": "DUP"})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    assert api.delete("/segments/DUP").status_code == 200
    assert api.get("/segments/DUP").status_code == 404
    assert api.post("/segments", {"slug": "DUP"}).status_code == 201


@pytest.mark.parametrize("percent", [-0.5, 100.5, 1.234, "10", True])
def test_invalid_rollout_percent(api, percent):
    response = api.post("/segments", {"slug": "ROLL", "rollout_percent": percent})
    assert response.status_code == 422
    assert "rollout_percent" in response.json["error"]["details"][0]["field"]


def test_patch_description_and_rollout(api):
    api.segment("PATCHED")
    response = api.patch("/segments/PATCHED", {"description": "new", "rollout_percent": 20})
    assert response.status_code == 200
    assert response.json["description"] == "new" and response.json["rollout_percent"] == 20.0
    only_desc = api.patch("/segments/PATCHED", {"description": "again"})
    assert only_desc.json["rollout_percent"] == 20.0
    assert api.patch("/segments/NOPE", {"description": "x"}).status_code == 404
    assert api.patch("/segments/PATCHED", {"colour": "red"}).status_code == 422


def test_search_and_pagination(api):
    for i in range(7):
        api.segment(f"EXP_{i}", description="checkout" if i % 2 else "")
    api.segment("OTHER")
    page = api.get("/segments?q=exp_&per_page=3&page=2").json
    assert page["total"] == 7 and len(page["items"]) == 3
    assert api.get("/segments?q=checkout").json["total"] == 3
    assert api.get("/segments?q=%25").json["total"] == 0  # % is literal, not a wildcard
    assert api.get("/segments?per_page=0").status_code == 422
    assert api.get("/segments?page=abc").status_code == 422


def test_delete_removes_members_with_history(api):
    api.segment("GONE")
    api.segment("STAYS")
    assert api.change(7, ["GONE", "STAYS"]).status_code == 200
    response = api.delete("/segments/GONE")
    assert response.json["members_removed"] == 1
    assert [s["slug"] for s in api.active(7)] == ["STAYS"]
    items = api.get("/users/7/history").json["items"]
    assert items[-1]["segment"] == "GONE" and items[-1]["operation"] == "removed"
    assert items[-1]["reason"] == "segment_deleted"
    assert api.delete("/segments/GONE").status_code == 404


def test_members_listing_and_bulk_add(api):
    api.segment("BULK")
    response = api.post("/segments/BULK/members", {"user_ids": [5, 3, 3, 9, 1], "ttl_seconds": 3600})
    assert response.status_code == 200
    assert response.json == {
        "segment": "BULK",
        "received": 5,
        "added": 4,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
    }
    again = api.post("/segments/BULK/members", {"user_ids": [1, 2]}).json
    assert again["added"] == 1 and again["updated"] == 1  # 1 loses its TTL
    first = api.get("/segments/BULK/members?limit=3").json
    assert [m["user_id"] for m in first["items"]] == [1, 2, 3] and first["next_after"] == 3
    rest = api.get(f"/segments/BULK/members?limit=3&after={first['next_after']}").json
    assert [m["user_id"] for m in rest["items"]] == [5, 9] and rest["next_after"] is None
    assert api.get("/segments/BULK").json["member_count"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"user_ids": []},
        {"user_ids": [0]},
        {"user_ids": [-4]},
        {"user_ids": [2**63]},
        {"user_ids": [True]},
        {"user_ids": ["1"]},
        {"user_ids": [1], "ttl_seconds": 0},
    ],
)
def test_bulk_add_rejects(api, body):
    api.segment("BULKBAD")
    response = api.post("/segments/BULKBAD/members", body)
    assert response.status_code == 422, response.json
    assert api.get("/segments/BULKBAD").json["member_count"] == 0
