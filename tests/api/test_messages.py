"""Plain, true messages (issue 21 B): a full exclusion group states this segment's ceiling, a
list with bad ids names every one as ``user_ids[<index>]``."""

from __future__ import annotations

import pytest


def test_a_full_group_states_this_segments_ceiling(api):
    """G_A 60% and G_B 10% in DISC: G_A can go to 90%. Before, 91 answered "at most 30% is free
    in group DISC" while 90 was accepted."""
    api.segment("G_A", rollout_percent=60, exclusion_group="DISC")
    api.segment("G_B", rollout_percent=10, exclusion_group="DISC")
    refused = api.patch("/segments/G_A", {"rollout_percent": 91})
    assert refused.status_code == 422
    error = refused.json["error"]
    assert "90%" in error["message"] and "30%" not in error["message"].split("(")[0]
    [item] = error["details"]
    assert item["field"] == "rollout_percent" and "at most 90%" in item["message"]
    assert item["max_percent"] == 90 and item["free_percent"] == 30 and item["exclusion_group"] == "DISC"
    assert api.patch("/segments/G_A", {"rollout_percent": 90}).status_code == 200
    # joining: the ceiling is what is free
    api.segment("G_C", rollout_percent=5)
    joining = api.patch("/segments/G_C", {"exclusion_group": "DISC"})
    assert joining.status_code == 422 and joining.json["error"]["details"][0]["max_percent"] == 0


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/users/segments:lookup"),
        ("post", "/segments/IDS/members"),
        ("put", "/segments/IDS/members"),
        ("delete", "/segments/IDS/members"),
    ],
)
def test_every_bad_id_of_a_list_is_named_by_its_index(api, method, path):
    """Before, {"user_ids": [1, -5, "x", 0]} named only user_ids.2 (the type error hid the
    range errors)."""
    api.segment("IDS")
    response = getattr(api, method)(path, {"user_ids": [1, -5, "x", 0, True, 1.5, 2**63, 2.0]})
    assert response.status_code == 422, response.json
    fields = [d["field"] for d in response.json["error"]["details"]]
    assert fields == [f"user_ids[{i}]" for i in (1, 2, 3, 4, 5, 6)]
