"""Webhook delivery for real (issue 27): a ``flask worker`` process (forking, with RQ's
scheduler), a redis-server of the test's own, writes through the API with real commits and a
local receiver verifying every signature with the ``standardwebhooks`` package. Faults: the
receiver down then back, Redis stopped at the moment of the change, the worker killed with
SIGKILL while a delivery is in flight, a receiver that hangs while another subscription keeps
receiving. Each checks that every event written is received (each webhook-id at least once,
none lost). The minutely sweep (rq-scheduler in production) is enqueued by the test where a
fault needs it, as the scheduler would."""

from __future__ import annotations

import os
import signal
import statistics
import time

import psutil
import pytest
from sqlalchemy import text

from tests.support.processes import flask_worker, log_tail, wait_for
from tests.support.webhooks import receiver
from webapp.jobs.webhooks import LINGER_SECONDS
from webapp.platform.extensions import db
from webapp.platform.queue import get_queue

pytestmark = [pytest.mark.fault, pytest.mark.slow]
ENV = {
    "WEBHOOK_ALLOW_LOOPBACK": "1",
    "WEBHOOK_TIMEOUT_SECONDS": "1",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.3",
    "WEBHOOK_RETRY_MAX_SECONDS": "1",
    "WEBHOOK_LEASE_MARGIN_SECONDS": "1",
    "JOB_ORPHAN_SECONDS": "3",
}


def subscribe(client, hooks, path, types=("segment.created", "segment.changed", "segment.deleted")):
    response = client.post("/api/v1/webhooks", json={"url": hooks.url(path), "event_types": list(types)})
    assert response.status_code == 201, response.json
    hooks.secrets[path] = response.json["secret"]
    return response.json["id"]


def create(client, slug):
    started = time.time()
    response = client.post("/api/v1/segments", json={"slug": slug})
    assert response.status_code == 201, response.json
    return started


def written_ids(app, subscription_id):
    with app.app_context():
        rows = db.session.execute(
            text(
                "SELECT e.msg_id FROM webhook_events e JOIN webhook_deliveries d ON d.event_id = e.id"
                " WHERE d.subscription_id = :s"
            ),
            {"s": subscription_id},
        ).scalars()
        ids = set(rows)
        db.session.remove()
        return ids


def sweep(app):
    """What rq-scheduler runs every minute."""
    with app.app_context():
        get_queue(app).enqueue("webapp.jobs.webhooks.sweep")


def test_delivered_fast_and_none_lost_while_the_receiver_is_down(jobs_app, tmp_path, capsys):
    client = jobs_app.test_client()
    log = tmp_path / "worker.log"
    with receiver() as hooks, flask_worker(jobs_app, log, **ENV):
        sub = subscribe(client, hooks, "/up")
        create(client, "WARM_UP")  # the worker's first job
        wait_for(lambda: len(hooks.ids("/up")) == 1, 30)
        latencies = []
        for n in range(20):
            started = create(client, f"FAST_{n}")
            wait_for(lambda n=n: len(hooks.ids("/up")) == n + 2, 10)
            latencies.append(hooks.events("/up")[-1].at - started)
        hooks.down.add("/up")
        for n in range(10):
            create(client, f"WHILE_DOWN_{n}")
        wait_for(lambda: hooks.attempts.get("/up", 0) >= 21 + 10 * 2, 20)  # each tried twice at least
        hooks.down.discard("/up")
        wait_for(lambda: len(set(hooks.ids("/up"))) == 31, 20), log_tail(log)
        assert set(hooks.ids("/up")) == written_ids(jobs_app, sub)  # every event, none lost
        assert hooks.rejected == []
    p50, p99 = statistics.median(latencies), max(latencies)
    with capsys.disabled():
        print(
            f"\nwebhooks: commit->receiver p50 {p50 * 1000:.0f} ms, max of 20 {p99 * 1000:.0f} ms; "
            f"31 events, {hooks.attempts['/up']} attempts, {len(hooks.ids('/up'))} received while down then back"
        )
    assert p50 < 2.0


def test_a_change_made_while_redis_is_stopped_is_delivered_once_it_is_back(jobs_app, private_redis, tmp_path):
    client = jobs_app.test_client()
    log = tmp_path / "worker.log"
    with receiver() as hooks, flask_worker(jobs_app, log, **ENV, SCHEDULER_RECONNECT_MAX_SECONDS="1"):
        sub = subscribe(client, hooks, "/r")
        create(client, "BEFORE")
        wait_for(lambda: len(hooks.ids("/r")) == 1, 30)
        time.sleep(LINGER_SECONDS + 1)  # the pump has ended: nothing but the outbox knows of what follows
        private_redis.stop()
        for n in range(5):
            create(client, f"NO_REDIS_{n}")  # the write succeeds: its event is in the outbox
        assert len(written_ids(jobs_app, sub)) == 6
        time.sleep(1)
        assert len(hooks.ids("/r")) == 1
        private_redis.start()
        sweep(jobs_app)
        wait_for(lambda: set(hooks.ids("/r")) == written_ids(jobs_app, sub), 60), log_tail(log)
        assert hooks.rejected == []


def test_a_delivery_in_flight_when_the_worker_is_killed_is_delivered(jobs_app, tmp_path):
    client = jobs_app.test_client()
    env = {**ENV, "WEBHOOK_TIMEOUT_SECONDS": "4"}
    with receiver() as hooks:
        sub = subscribe(client, hooks, "/k")
        with flask_worker(jobs_app, tmp_path / "first.log", **env) as worker:
            create(client, "WARM_UP")
            wait_for(lambda: len(hooks.ids("/k")) == 1, 30)
            hooks.hanging.add("/k")
            create(client, "KILLED_MID_DELIVERY")
            wait_for(lambda: hooks.attempts.get("/k", 0) == 2, 10)  # in flight now
            family = psutil.Process(worker.pid).children(recursive=True)
            os.kill(worker.pid, signal.SIGKILL)
            for child in family:
                child.kill()
            worker.wait(5)
        hooks.hanging.discard("/k")
        with flask_worker(jobs_app, tmp_path / "second.log", **env):
            time.sleep(5.5)  # the lease (timeout + margin) runs out
            sweep(jobs_app)
            (
                wait_for(lambda: set(hooks.ids("/k")) == written_ids(jobs_app, sub), 30),
                log_tail(tmp_path / "second.log"),
            )
        assert hooks.ids("/k").count(hooks.ids("/k")[-1]) == 1
        assert hooks.rejected == []


def test_a_hanging_receiver_does_not_hold_up_other_subscriptions(jobs_app, tmp_path):
    client = jobs_app.test_client()
    log = tmp_path / "worker.log"
    with receiver() as hooks, flask_worker(jobs_app, log, **{**ENV, "WEBHOOK_TIMEOUT_SECONDS": "3"}):
        subscribe(client, hooks, "/hang")
        healthy = subscribe(client, hooks, "/ok")
        hooks.hanging.add("/hang")
        create(client, "WARM_UP")
        wait_for(lambda: len(hooks.ids("/ok")) == 1, 30)
        latencies = []
        for n in range(10):
            started = create(client, f"BESIDE_A_HANG_{n}")
            wait_for(lambda n=n: len(hooks.ids("/ok")) == n + 2, 5), log_tail(log)
            latencies.append(hooks.events("/ok")[-1].at - started)
        assert max(latencies) < 2.0, latencies  # well under the hanging one's 3 s timeout
        assert hooks.ids("/hang") == []
        assert set(hooks.ids("/ok")) == written_ids(jobs_app, healthy)
