"""The scheduler survives Redis going away (issue 22): ``flask scheduler`` used to register its
death and exit on the first Redis error, so the reaper, the minutely rollouts job and the
nightly purge stopped for good. A real ``flask scheduler`` process, a redis-server of the
test's own stopped for a while and started again (empty, as after a restart without
persistence): the same process must still be running and enqueue its periodic jobs again."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from devstack.redis_server import direct_client
from tests.support.processes import ROOT, end_process_tree, log_tail, wait_for, worker_env

pytestmark = pytest.mark.fault

OUTAGE = 12.0  # seconds: the scheduler polls every second here, so it meets the outage many times


def periodic_jobs_queued(port: int) -> set[str]:
    from webapp.jobs.schedule import REAPER_JOB_ID, ROLLOUTS_JOB_ID
    from webapp.platform.queue import QUEUE_NAME

    client = direct_client(port)
    try:
        queued = {raw.decode() for raw in client.lrange(f"rq:queue:{QUEUE_NAME}", 0, -1)}
    except Exception:
        return set()
    finally:
        client.close()
    return queued & {REAPER_JOB_ID, ROLLOUTS_JOB_ID}


@pytest.mark.slow
def test_the_scheduler_survives_redis_going_away_and_enqueues_its_periodic_jobs_again(
    app_on, private_redis, tmp_path
):
    app = app_on(REDIS_URL=private_redis.url, REPORTS_DIR=str(tmp_path))
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "scheduler", "--no-catch-up"],
            cwd=ROOT,
            env=worker_env(app, SCHEDULER_INTERVAL_SECONDS="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_for(lambda: periodic_jobs_queued(private_redis.port), 60, 0.2), (
                f"the scheduler never enqueued its periodic jobs\n{log_tail(log_path)}"
            )
            private_redis.stop()
            time.sleep(OUTAGE)
            assert proc.poll() is None, (
                f"the scheduler exited ({proc.returncode}) while Redis was away\n{log_tail(log_path)}"
            )
            private_redis.start()  # empty: everything the scheduler had registered is gone
            queued = wait_for(lambda: periodic_jobs_queued(private_redis.port), 45, 0.2)
            assert queued, (
                f"the scheduler did not enqueue its periodic jobs after Redis came back "
                f"(running: {proc.poll() is None})\n{log_tail(log_path)}"
            )
            assert proc.poll() is None
        finally:
            end_process_tree(proc)
