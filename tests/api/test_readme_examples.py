"""The README's curl examples, taken from README.md itself, run twice as a reader pastes them
(issue 24, item 8): a bash script of real ``curl`` processes against a real HTTP server on a free
port (only ``http://127.0.0.1:8000`` is replaced), a worker running the report meanwhile. Each
run gives the answers the README's comments state: 201 then 409 for the creates, 200 for the
writes and reads, 202 for the report, and the download does not fail on the file the first run
left (``curl -OJ`` refused to overwrite it)."""

import json
import re
import subprocess
import time
from pathlib import Path

from webapp.jobs.worker import run_worker

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8000"


def readme_block() -> str:
    """The README's first ``sh`` block with curl in it (the JSON API at a glance)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return next(block for block in blocks if "curl " in block and "/api/v1/segments" in block)


def run(script: str, app, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The script in bash (``set -e``: a failing command fails the run), the worker serving the
    queue until it ends."""
    process = subprocess.Popen(
        ["bash", "-ec", script], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, "the README's examples did not finish"
        run_worker(app, burst=True, fork=False)
        time.sleep(0.2)
    out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_readme_examples_run_twice_with_the_answers_it_states(redis_app, curl_server, tmp_path):
    address, recorded = curl_server
    base = f"http://{address}"
    script = readme_block().replace(BASE, base)
    assert script.count("curl ") >= 6

    answers = []
    for _ in range(2):
        before = len(recorded.statuses)
        done = run(script, redis_app, tmp_path)
        assert done.returncode == 0, done.stderr
        statuses = recorded.statuses[before:]
        polls = statuses[5:-1]  # the report's status until it is finished
        assert polls and set(polls) == {200}
        answers.append((statuses[:5], statuses[-1], done.stdout))

    (first, first_download, out1), (second, second_download, out2) = answers
    assert first == [201, 201, 200, 200, 202]
    assert second == [409, 409, 200, 200, 202]  # the documented 409: the segments exist
    assert first_download == second_download == 200
    # Every JSON answer ends its line: each is a line of the output of its own.
    lines = out2.splitlines()
    conflict = json.loads(lines[0])
    assert conflict["error"]["code"] == "conflict" and conflict["error"]["details"][0]["code"] == "slug_taken"
    again = json.loads(lines[2])  # the second run adds nothing; the day's TTL starts over
    assert (again["added"], again["updated"], again["unchanged"]) == (
        [],
        ["AVITO_VOICE_MESSAGES"],
        ["AVITO_DISCOUNT_30"],
    )
    assert [s["slug"] for s in json.loads(lines[3])["segments"]] == [
        "AVITO_DISCOUNT_30",
        "AVITO_VOICE_MESSAGES",
    ]
    csv_lines = out2.split("\n", 4)[4].splitlines()
    assert csv_lines[0].startswith("user") and len(csv_lines) >= 3  # the header and user 1000's two adds
    assert (tmp_path / "history-user-1000.csv").read_text().splitlines() == csv_lines


def api_md_block() -> str:
    """docs/api.md's "curl examples (against make run)", without the last (a 1,000,000-id replace)."""
    text = (ROOT / "docs" / "api.md").read_text()
    block = re.search(r"## curl examples \(against `make run`\)\n.*?```sh\n(.*?)```", text, re.S)
    assert block is not None
    return block[1].split("# a bulk replace of 1,000,000 ids")[0]


def test_the_api_reference_examples_run_twice(redis_app, curl_server, tmp_path):
    """docs/api.md's longer list, twice: the same answers but the three creates' 409s, and the
    report's download succeeds again."""
    address, recorded = curl_server
    base = f"http://{address}"
    script = api_md_block().replace(BASE, base)
    runs = []
    for _ in range(2):
        before = len(recorded.statuses)
        done = run(script, redis_app, tmp_path)
        assert done.returncode == 0, done.stderr
        runs.append(recorded.statuses[before:])
    first, second = runs
    assert all(status < 500 for status in first + second)
    assert first.count(422) == second.count(422) == 1  # the documented unknown slug
    # The second run: the three creates answer the documented 409, and so does the documented
    # atomic add of AVITO_DISCOUNT_30 to user 1000 (by then in AVITO_DISCOUNT_50 through the
    # DISCOUNTS group's rollout: the group's salt comes from its name, so this is the same every
    # run); everything else as before (the report's polls may differ in number).
    assert first.count(409) == 0 and second.count(409) == 4, recorded.calls
    assert first.count(201) - second.count(201) == 3


def test_the_readme_traits_examples_run_twice(redis_app, curl_server, tmp_path):
    """The README's traits block (issue 29): push, merge, read, history, an import of a file;
    twice, as a reader pastes it (the second run's PUT puts back what the PATCH changed)."""
    address, recorded = curl_server
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "/traits" in b)
    script = block.replace(BASE, f"http://{address}")
    outputs = []
    for _ in range(2):
        before = len(recorded.statuses)
        done = run(script, redis_app, tmp_path)
        assert done.returncode == 0, done.stderr
        assert recorded.statuses[before:] == [200, 200, 200, 200, 202]
        outputs.append(done.stdout.splitlines())
    first, second = outputs
    assert json.loads(first[2])["traits"] == {"app_version": "5.2.1", "country": "RU", "plan": "free"}
    assert (json.loads(second[1])["set_keys"], json.loads(second[1])["deleted_keys"]) == (["plan"], ["age"])
    history = [(e["action"], e["keys"]) for e in json.loads(second[3])["items"]]
    assert history == [
        ("set", ["age", "app_version", "country", "plan"]),
        ("set", ["plan"]),
        ("deleted", ["age"]),
        ("set", ["age", "plan"]),
        ("set", ["plan"]),
        ("deleted", ["age"]),
    ]
    assert json.loads(second[4])["kind"] == "trait_import"
