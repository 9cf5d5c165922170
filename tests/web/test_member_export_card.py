"""The segment page's *Export members* card says what its CSV holds for each kind of segment (a
plain one, one in rule mode, a plain one whose first rules are being evaluated), and the export
behind it, through the dashboard and the API, is what it says (issue 29, item 4)."""

from __future__ import annotations

import csv
import io
import re

from tests.services.test_rule_segments import run_operations
from webapp.platform.extensions import db

PAID = [{"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]}]


def card(client, slug: str) -> str:
    page = client.get(f"/segments/{slug}").get_data(as_text=True)
    found = re.search(r'<div id="members-export".*?</form>', page, re.S)
    assert found, "no export card"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found[0]))


def table(data: bytes, separator: str) -> list[list[str]]:
    return list(
        csv.reader(io.StringIO(data.decode().removeprefix("\ufeff"), newline=""), delimiter=separator)
    )


def test_the_card_says_what_each_kind_of_segment_exports(client, htmx, api):
    for user, plan in ((1, "paid"), (2, "paid"), (3, "free")):
        assert api.put(f"/users/{user}/traits", {"traits": {"plan": plan}}).status_code == 200
    api.segment("CARD_PLAIN", rollout_percent=10)
    api.segment("CARD_RULES", rules=PAID)
    api.segment("CARD_HALF", rules=PAID, rollout_percent=50, exclusion_group="CARD_G")
    api.segment("CARD_PEND", rollout_percent=20)
    assert api.patch("/segments/CARD_PEND", {"rules": PAID}).status_code == 200
    api.post("/segments/CARD_RULES/members", {"user_ids": [9]})

    plain = card(client, "CARD_PLAIN")
    assert "explicit members now" in plain and "The 10% rollout is not listed" in plain
    assert "rules" not in plain and "source" not in plain

    ruled = card(client, "CARD_RULES")
    assert "everyone in the segment now, each user once" in ruled
    assert (
        "the users its rules put in" in ruled
        and "source column saying which (explicit, ttl or rule)" in ruled
    )
    assert "Users removed by hand are left out, as reads leave them out" in ruled  # (no group)
    assert "rollout" not in ruled  # 100%: every matched user
    assert "not listed" not in ruled
    half = card(client, "CARD_HALF")
    assert "(matched and inside its 50% rollout)" in half
    assert "another segment of group CARD_G holds, as reads leave them out" in half

    pending = card(client, "CARD_PEND")
    assert "still being evaluated" in pending and "20% rollout, which is not listed" in pending
    assert "Once evaluated, an export lists the users its rules put in too" in pending

    # what the rule segment's card says is what its export holds: explicit and rule members
    run_operations(db.session)
    done = htmx("/segments/CARD_RULES/export", {"separator": ","})
    html = done.get_data(as_text=True)
    assert done.status_code == 200 and "3 members of CARD_RULES exported" in html
    link = re.search(r'href="(/reports/[0-9a-f-]{36}/download)"', html)[1]
    rows = table(client.get(link).data, ",")
    assert rows[0] == ["user_id", "segment", "source", "added_utc", "expires_utc"]
    assert [(r[0], r[2]) for r in rows[1:]] == [("1", "rule"), ("2", "rule"), ("9", "explicit")]
    # ... and the API's: the four columns it always had, then source
    body = api.post("/segments/CARD_RULES/members:export", {}).json
    rows = table(client.get(body["download_url"]).data, ";")
    assert rows[0] == ["user_id", "segment", "added_at", "expires_at", "source"]
    assert [(r[0], r[2] == "", r[4]) for r in rows[1:]] == [
        ("1", True, "rule"),
        ("2", True, "rule"),
        ("9", False, "explicit"),
    ]
    # the pending segment, evaluated, is in rule mode: its card says so
    assert "everyone in the segment now" in card(client, "CARD_PEND")


def test_the_openapi_document_says_what_the_export_holds(client):
    document = client.get("/api/openapi.json").json
    route = next(p for path, p in document["paths"].items() if path.endswith("members:export"))["post"]
    words = re.sub(r"\s+", " ", route["summary"] + " " + route["description"])
    assert "for a segment in rule mode, the users in through its rules" in words
    assert "`source` (`explicit` or `rule`" in words and "keeps its four columns" in words
