"""Large bulk adds and segment deletions run as resumable, idempotent chunked operations."""

import sqlalchemy as sa

from webapp.jobs.worker import run_worker
from webapp.models import BulkOperation
from webapp.platform.extensions import db
from webapp.services.membership import bulk

IDS = list(range(1, 25_001))


def count(sql, **params):
    return db.session.scalar(sa.text(sql), params)


def test_a_large_bulk_add_is_an_operation_that_finishes_on_the_worker(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "BIG_ADD"})
    client.post("/api/v1/users/3/segments", json={"add": ["BIG_ADD"]})  # already a member
    response = client.post("/api/v1/segments/BIG_ADD/members", json={"user_ids": IDS + [3, 3]})
    assert response.status_code == 202 and response.headers["Location"] == response.json["status_url"]
    assert response.json["status"] == "queued" and response.json["total"] == len(IDS)
    run_worker(redis_app, burst=True, fork=False)
    done = client.get(response.json["status_url"]).json
    assert (done["status"], done["progress"], done["added"], done["done"]) == (
        "finished",
        100,
        len(IDS) - 1,
        len(IDS),
    )
    with redis_app.app_context():
        assert count("SELECT count(*) FROM memberships") == len(IDS)
        assert count("SELECT count(*) FROM membership_events WHERE action = 'added'") == len(IDS)
        assert count("SELECT count(*) FROM bulk_operation_ids") == 0  # cleaned up
    assert client.get("/api/v1/users/24999/segments").json["segments"][0]["slug"] == "BIG_ADD"


def test_an_interrupted_operation_resumes_at_its_cursor_without_duplicates(redis_app, committed_db):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "RESUME"})
    operation_id = client.post("/api/v1/segments/RESUME/members", json={"user_ids": IDS}).json["id"]
    with redis_app.app_context():  # a first attempt does two chunks, then its worker dies
        operation = bulk.get_operation(db.session, operation_id)
        bulk.run_chunk(db.session, operation)
        bulk.run_chunk(db.session, operation)
        db.session.commit()
        assert operation.done == 2 * bulk.CHUNK and operation.cursor == IDS[2 * bulk.CHUNK - 1]
    run_worker(redis_app, burst=True, fork=False)  # the queued job runs: it resumes after the cursor
    with redis_app.app_context():
        operation = db.session.get(BulkOperation, operation.id)
        assert operation.status == "finished" and operation.done == len(IDS) and operation.added == len(IDS)
        assert count("SELECT count(*) FROM membership_events") == len(IDS)  # each user added once


def test_deleting_a_big_segment_is_instant_for_readers_and_removes_rows_in_the_background(
    redis_app, committed_db
):
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "BIG_GONE"})
    client.post("/api/v1/segments/BIG_GONE/members", json={"user_ids": IDS[:12_000]})
    run_worker(redis_app, burst=True, fork=False)
    deleted = client.delete("/api/v1/segments/BIG_GONE").json
    assert deleted["members_removed"] == 12_000 and deleted["operation_url"]
    assert client.get("/api/v1/users/5/segments").json["segments"] == []  # gone for readers at once
    assert client.post("/api/v1/segments", json={"slug": "BIG_GONE"}).status_code == 201  # slug free again
    run_worker(redis_app, burst=True, fork=False)
    assert client.get(deleted["operation_url"]).json["status"] == "finished"
    with redis_app.app_context():
        assert count("SELECT count(*) FROM memberships") == 0
        stamps = db.session.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT occurred_at) FROM membership_events WHERE reason = 'segment_deleted'"
            )
        ).one()
        assert tuple(stamps) == (12_000, 1)  # every member left at the moment of the deletion


def test_small_lists_stay_synchronous(api):
    api.segment("SMALL")
    response = api.post("/segments/SMALL/members", {"user_ids": [1, 2, 2, 3]})
    assert response.status_code == 200 and response.json["added"] == 3 and response.json["received"] == 4
