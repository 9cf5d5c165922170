"""The seed README's six curl examples, verbatim, in order, against the Flask test client."""

import csv
import io
import re
import shlex
from datetime import UTC, datetime

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


def curl(client, command: str):
    """Run a curl command line (``-X``, ``-H``, ``-d`` and a URL) on the test client; the
    host and port are dropped, everything else is sent as written."""
    words = shlex.split(command)
    assert words.pop(0) == "curl"
    method, headers, data, url = None, {}, None, None
    while words:
        word = words.pop(0)
        if word == "-X":
            method = words.pop(0)
        elif word == "-H":
            name, value = words.pop(0).split(":", 1)
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data = words.pop(0)
        else:
            url = word
    assert url is not None
    path = re.sub(r"^(https?://)?[^/]+", "", url)
    return client.open(
        path, method=method or ("POST" if data is not None else "GET"), headers=headers, data=data
    )


def test_seed_readme_examples_in_order(redis_app, committed_db):
    client = redis_app.test_client()
    started = datetime.now(UTC).replace(microsecond=0)

    # 1. Create a segment; the same call creates the other three segments the README's later
    #    examples use (AVITO_PERFORMANCE_VAS, AVITO_DISCOUNT_30, AVITO_DISCOUNT_50).
    response = curl(client, EXAMPLES[1])
    assert response.status_code == 200 and response.json == {"slug": "AVITO_VOICE_MESSAGES"}
    for slug in ("AVITO_PERFORMANCE_VAS", "AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"):
        assert curl(client, CREATE % slug).json == {"slug": slug}
    assert curl(client, EXAMPLES[1]).status_code == 409  # it exists now

    # 2. Delete AVITO_VOICE_MESSAGES. Example 3 adds it to a user, so it is then created again
    #    with example 1 (a deleted slug is free at once).
    response = curl(client, EXAMPLES[2])
    assert response.status_code == 200 and response.json["slug"] == "AVITO_VOICE_MESSAGES"
    assert curl(client, EXAMPLES[2]).status_code == 404  # deleted already
    assert curl(client, EXAMPLES[1]).status_code == 200

    # 3. Change user 1000's segments. Its "del" removes AVITO_DISCOUNT_30, so the user is put in
    #    that segment first (else the removal is only reported, under "not_members").
    setup = client.post("/segment/user", json={"user_id": 1000, "add": ["AVITO_DISCOUNT_30"]})
    assert setup.status_code == 200
    response = curl(client, EXAMPLES[3])
    assert response.status_code == 200
    assert response.json["added"] == ["AVITO_VOICE_MESSAGES", "AVITO_PERFORMANCE_VAS"]
    assert response.json["removed"] == ["AVITO_DISCOUNT_30"]

    # 4. The user's segments.
    response = curl(client, EXAMPLES[4])
    assert response.status_code == 200
    assert response.json == {
        "user_id": 1000,
        "segments": [{"slug": "AVITO_PERFORMANCE_VAS"}, {"slug": "AVITO_VOICE_MESSAGES"}],
    }

    # 5. A report of every user's history from 2023-08-29 10:32 (UTC) until now; a worker runs it.
    response = curl(client, EXAMPLES[5])
    assert response.status_code == 200 and list(response.json) == ["task_id"]
    task_id = response.json["task_id"]
    assert curl(client, EXAMPLES[5]).json == {"task_id": task_id}  # still pending: the same task
    run_worker(redis_app, burst=True, fork=False)

    # 6. Its status, with the real task id, then the file through the link.
    response = curl(client, EXAMPLES[6].replace("<task id>", task_id))
    assert response.status_code == 200
    assert response.json == {"status": "success", "link_to_file": f"http://localhost/download?id={task_id}"}
    download = curl(client, f"curl '{response.json['link_to_file']}'")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(download.data.decode())))
    assert rows[0] == ["user", "segment", "operation", "date"]
    assert sorted(tuple(row[:3]) for row in rows[1:]) == [
        ("1000", "AVITO_DISCOUNT_30", "added"),
        ("1000", "AVITO_DISCOUNT_30", "deleted"),
        ("1000", "AVITO_PERFORMANCE_VAS", "added"),
        ("1000", "AVITO_VOICE_MESSAGES", "added"),
    ]
    dates = [datetime.strptime(row[3], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for row in rows[1:]]
    assert all(started <= d <= datetime.now(UTC) for d in dates) and dates == sorted(dates)
