"""Background jobs: RQ when REDIS_URL is set, an in-process thread pool otherwise."""
