"""The seed README's six curl examples, verbatim, in order: real ``curl`` processes (run by a
shell, as a reader pastes them) against a real HTTP server on a free port; only the host and port
(``localhost:8080``) are replaced, and example 6's ``<task id>`` by the id example 5 answered.
curl prints only the body, so the server records each status it answers."""

import csv
import io
import json
import subprocess
from datetime import UTC, datetime

from tests.support.curl_server import Recorded
from webapp.jobs.worker import run_worker

CREATE = """curl -X POST localhost:8080/segment -H 'Content-Type: application/json' -d '{"slug": "%s"}'"""
EXAMPLES = {
    1: CREATE % "AVITO_VOICE_MESSAGES",
    2: """curl -X DELETE localhost:8080/segment -H 'Content-Type: application/json' -d '{"slug": "AVITO_VOICE_MESSAGES"}'""",
    3: """curl -X POST localhost:8080/segment/user -H 'Content-Type: application/json' -d '{"user_id": 1000, "add": """
    """["AVITO_VOICE_MESSAGES", "AVITO_PERFORMANCE_VAS"], "del": ["AVITO_DISCOUNT_30"], "ttl_days": 3}'""",
    4: "curl 'localhost:8080/segment/user?id=1000'",
    5: "curl 'localhost:8080/report?date=2023-08-29%2010:32'",
    6: "curl 'localhost:8080/report_check?task_id=<task id>'",
}


class Curl:
    def __init__(self, address: str, recorded: Recorded):
        self.address, self.recorded = address, recorded

    def __call__(self, command: str) -> tuple[int, bytes]:
        """Run ``command`` (a seed README line) in a shell with only the host and port replaced;
        the status the server answered and what curl printed (the body)."""
        assert command.startswith("curl ") and "localhost:8080" in command
        before = len(self.recorded.statuses)
        done = subprocess.run(
            ["bash", "-c", command.replace("localhost:8080", self.address)],
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert len(self.recorded.statuses) == before + 1, "one request per example"
        return self.recorded.statuses[-1], done.stdout


def test_seed_readme_examples_in_order(redis_app, curl_server):
    address, recorded = curl_server
    curl = Curl(address, recorded)
    client = redis_app.test_client()
    started = datetime.now(UTC).replace(microsecond=0)

    # 1. Create a segment; the same call creates the other three segments the README's later
    #    examples use (AVITO_PERFORMANCE_VAS, AVITO_DISCOUNT_30, AVITO_DISCOUNT_50).
    status, body = curl(EXAMPLES[1])
    assert status == 200 and json.loads(body) == {"slug": "AVITO_VOICE_MESSAGES"}
    for slug in ("AVITO_PERFORMANCE_VAS", "AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"):
        assert curl(CREATE % slug) == (
            200,
            json.dumps({"slug": slug}, separators=(",", ":")).encode() + b"\n",
        )
    assert curl(EXAMPLES[1])[0] == 409  # it exists now

    # 2. Delete AVITO_VOICE_MESSAGES. Example 3 adds it to a user, so it is then created again
    #    with example 1 (a deleted slug is free at once).
    status, body = curl(EXAMPLES[2])
    assert status == 200 and json.loads(body)["slug"] == "AVITO_VOICE_MESSAGES"
    assert curl(EXAMPLES[2])[0] == 404  # deleted already
    assert curl(EXAMPLES[1])[0] == 200

    # 3. Change user 1000's segments. Its "del" removes AVITO_DISCOUNT_30, so the user is put in
    #    that segment first (else the removal is only reported, under "not_members").
    setup = client.post("/segment/user", json={"user_id": 1000, "add": ["AVITO_DISCOUNT_30"]})
    assert setup.status_code == 200
    status, body = curl(EXAMPLES[3])
    assert status == 200
    assert json.loads(body)["added"] == ["AVITO_VOICE_MESSAGES", "AVITO_PERFORMANCE_VAS"]
    assert json.loads(body)["removed"] == ["AVITO_DISCOUNT_30"]
    again = json.loads(curl(EXAMPLES[3])[1])  # a second run: nothing left to add or remove
    assert again["added"] == [] and again["removed"] == [], again

    # 4. The user's segments.
    status, body = curl(EXAMPLES[4])
    assert status == 200 and curl(EXAMPLES[4]) == (status, body)  # (twice: the same answer)
    assert json.loads(body) == {
        "user_id": 1000,
        "segments": [{"slug": "AVITO_PERFORMANCE_VAS"}, {"slug": "AVITO_VOICE_MESSAGES"}],
    }

    # 5. A report of every user's history from 2023-08-29 10:32 (UTC) until now; a worker runs it.
    status, body = curl(EXAMPLES[5])
    assert status == 200 and list(json.loads(body)) == ["task_id"]
    task_id = json.loads(body)["task_id"]
    assert json.loads(curl(EXAMPLES[5])[1]) == {"task_id": task_id}  # still pending: the same task
    run_worker(redis_app, burst=True, fork=False)

    # 6. Its status, with the real task id, then the file through the link.
    status, body = curl(EXAMPLES[6].replace("<task id>", task_id))
    assert status == 200 and curl(EXAMPLES[6].replace("<task id>", task_id)) == (status, body)
    link = f"http://{address}/download?id={task_id}"
    assert json.loads(body) == {"status": "success", "link_to_file": link}
    download = subprocess.run(["curl", "-s", "-D", "-", link], capture_output=True, timeout=60, check=True)
    head, _, data = download.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: text/csv" in head
    assert b"Content-Disposition: attachment;" in head
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["user", "segment", "operation", "date"]
    assert sorted(tuple(row[:3]) for row in rows[1:]) == [
        ("1000", "AVITO_DISCOUNT_30", "added"),
        ("1000", "AVITO_DISCOUNT_30", "deleted"),
        ("1000", "AVITO_PERFORMANCE_VAS", "added"),
        ("1000", "AVITO_VOICE_MESSAGES", "added"),
    ]
    dates = [datetime.strptime(row[3], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for row in rows[1:]]
    assert all(started <= d <= datetime.now(UTC) for d in dates) and dates == sorted(dates)
