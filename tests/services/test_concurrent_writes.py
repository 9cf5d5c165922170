"""1. Deadlock-free writes: many writers on one user, real connections, real concurrency."""

from __future__ import annotations

import random
import threading

import pytest

from tests.support.threads import in_threads

pytestmark = pytest.mark.fault

SEGMENTS = ["DL_A", "DL_B", "DL_C", "DL_D"]
USER = 4242
THREADS, POSTS = 16, 8


@pytest.mark.slow
def test_sixteen_writers_on_one_user_never_fail_and_history_replays_to_the_state(app, committed_db):
    setup = app.test_client()
    for slug in SEGMENTS:
        assert setup.post("/api/v1/segments", json={"slug": slug}).status_code == 201
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, int, str]] = []

    def writer(index: int) -> None:
        rng = random.Random(index)
        client = app.test_client()  # a client (and so a database connection) per thread
        barrier.wait(30)
        for _ in range(POSTS):
            order = SEGMENTS[:]
            rng.shuffle(order)  # add two, remove the other two, each list in shuffled order
            response = client.post(
                f"/api/v1/users/{USER}/segments", json={"add": order[:2], "del": order[2:]}
            )
            answers.append((index, response.status_code, response.get_data(as_text=True)[:300]))

    in_threads(THREADS, writer, timeout=60)  # (a thread still running after 60 s: a deadlock?)
    assert len(answers) == THREADS * POSTS
    server_errors = [a for a in answers if a[1] >= 500]
    assert server_errors == [], f"{len(server_errors)} responses >= 500, e.g. {server_errors[:3]}"

    history = setup.get(f"/api/v1/users/{USER}/history")
    assert history.status_code == 200, history.get_data(as_text=True)
    current = setup.get(f"/api/v1/users/{USER}/segments")
    assert current.status_code == 200
    members = {s["slug"] for s in current.json["segments"]}
    for slug in SEGMENTS:
        ops = [item["operation"] for item in history.json["items"] if item["segment"] == slug]
        assert all(a != b for a, b in zip(ops, ops[1:], strict=False)), (
            f"{slug}: history does not alternate: {ops}"
        )
        assert not ops or ops[0] == "added", f"{slug}: history starts with {ops[0]}"
        replayed = bool(ops) and ops[-1] == "added"
        assert replayed == (slug in members), f"{slug}: history ends {ops[-1:]} but member={slug in members}"
