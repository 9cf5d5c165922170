"""Fixtures for jobs: an app wired to the real Redis (a dedicated db index, flushed)."""
import pytest
from redis import Redis

from webapp import create_app

TEST_REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def redis_app(app):
    """The test app's config with REDIS_URL set: RQ queue, scheduler, cache on real Redis."""
    client = Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    config = {**app.config, "REDIS_URL": TEST_REDIS_URL}
    rq_app = create_app(config)
    yield rq_app
    client.flushdb()
    client.close()
