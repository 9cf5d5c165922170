"""The README's rule segment session, taken from README.md itself, run twice with real curl
against a real HTTP server (a worker running the re-evaluation meanwhile): user 1000 in RU_PAID
through the rule once evaluated, out at once after a trait change, the history saying both with
reason rule (issue 29)."""

import json
import re

from tests.api.test_readme_examples import BASE, ROOT, run


def readme_rules_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Rule segments") :]
    return re.search(r"```sh\n(.*?)```", section, re.S)[1]


def test_the_readme_rule_segment_session(redis_app, curl_server, tmp_path):
    address, recorded = curl_server
    script = readme_rules_block().replace(BASE, f"http://{address}")
    for created in (201, 409):
        before = len(recorded.statuses)
        done = run(script, redis_app, tmp_path)
        assert done.returncode == 0, done.stderr
        statuses = recorded.statuses[before:]
        assert statuses[:2] == [200, created] and set(statuses) <= {200, created}, statuses
        lines = done.stdout.splitlines()
        answers = [json.loads(line) for line in lines if line.startswith('{"user_id":1000,"segments"')]
        assert answers[0]["segments"] == [{"slug": "RU_PAID", "source": "rule", "expires_at": None}]
        assert answers[1]["segments"] == []
        history = json.loads(lines[-1])["items"]
        assert [(i["segment"], i["operation"], i["reason"]) for i in history][-2:] == [
            ("RU_PAID", "added", "rule"),
            ("RU_PAID", "removed", "rule"),
        ]
        # why: the segment's creation with rules (the first run; the second: the PUT of plan
        # paid), then the PATCH's key
        assert history[-2]["cause"]["kind"] == ("created" if created == 201 else "traits")
        assert (history[-1]["cause"]["kind"], history[-1]["cause"]["keys"]) == ("traits", ["plan"])
