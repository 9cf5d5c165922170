"""POST /segments/<slug>/impact with ``change: "restore"`` and POST .../restore?catalog_version=:
the restore's dry run over HTTP, its numbers the history the restore writes, a stale version
refused with 409 ``impact_changed``, a refused preview answered with the restore's own code."""

from __future__ import annotations


def test_a_restore_preview_then_the_restore_it_holds(api):
    api.segment("RI_OTHER", rollout_percent=0, exclusion_group="RI_GROUP")
    api.segment("RI_BACK", rollout_percent=20, exclusion_group="RI_GROUP")
    assert api.post("/segments/RI_BACK/members", {"user_ids": list(range(1, 400, 3))}).status_code in (
        200,
        201,
    )
    assert api.patch("/segments/RI_OTHER", {"rollout_percent": 30}).status_code == 200
    assert api.delete("/segments/RI_BACK").status_code == 200
    preview = api.post("/segments/RI_BACK/impact", {"change": "restore"})
    assert preview.status_code == 200, preview.json
    body = preview.json
    assert body["change"] == "restore" and body["moves"][0]["slug"] == "RI_BACK"
    assert body["moves"][0]["joining"] >= len(range(1, 400, 3))
    others = {m["slug"]: m for m in body["moves"][1:]}
    assert others["RI_OTHER"]["leaving"] > 0  # its rollout had taken the deleted one's members
    api.segment("RI_ELSE")  # the catalog moves on
    stale = api.post(f"/segments/RI_BACK/restore?catalog_version={body['catalog_version']}")
    assert stale.status_code == 409 and stale.json["error"]["details"][0]["code"] == "impact_changed", (
        stale.json
    )
    assert api.get("/segments/RI_BACK/deleted").status_code == 200  # still deleted
    again = api.post("/segments/RI_BACK/impact", {"change": "restore"}).json
    assert (again["leaving"], again["joining"]) == (body["leaving"], body["joining"])
    done = api.post(f"/segments/RI_BACK/restore?catalog_version={again['catalog_version']}")
    assert done.status_code == 200, done.json
    gone = api.post("/segments/RI_BACK/impact", {"change": "restore"})
    assert gone.status_code == 404 and gone.json["error"]["details"][0]["code"] == "no_deleted_segment"


def test_a_refused_restore_preview_names_the_restore_refusal(api):
    api.segment("RI_TAKEN", rollout_percent=5)
    assert api.delete("/segments/RI_TAKEN").status_code == 200
    api.segment("RI_TAKEN")
    refused = api.post("/segments/RI_TAKEN/impact", {"change": "restore"})
    assert refused.status_code == 409 and refused.json["error"]["details"][0]["code"] == "slug_taken_since"
