# Segments — developer commands. `make run` serves on http://127.0.0.1:8000, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
export FLASK_APP = wsgi

.PHONY: run test test-long soak lint migrate worker scheduler screenshots bench bench-peer clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# migrate, worker, scheduler: against DATABASE_URL / REDIS_URL, or (unset) the local stack's
# embedded servers under instance/, started or reused (python -m devstack exec, devstack/stack.py).
migrate: $(BIN)/.installed
	$(BIN)/python -m devstack exec $(BIN)/flask db upgrade

# The whole stack: embedded PostgreSQL and Redis under instance/ (unless DATABASE_URL / REDIS_URL
# are set), migrations, gunicorn, worker and scheduler; Ctrl-C stops all of it (devstack/stack.py).
run: $(BIN)/.installed
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m devstack

worker: $(BIN)/.installed
	$(BIN)/python -m devstack exec $(BIN)/flask worker

scheduler: $(BIN)/.installed
	$(BIN)/python -m devstack exec $(BIN)/flask scheduler

# Everything on PostgreSQL + Redis: the system servers when they answer on 127.0.0.1
# (or TEST_DATABASE_URL / TEST_REDIS_URL), else embedded ones; each pytest process uses its own
# database and Redis db. TEST_WORKERS processes (pytest-xdist), a test file per process at a time:
# much of the suite waits (servers starting, timeouts, Redis stopped), so 3 fit on 2 cores.
TEST_WORKERS ?= 3
test: $(BIN)/.installed
	$(BIN)/pytest -q -m "not long" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The 1M-row runs and long load scenarios (marker `long`): others' latency during 1M-id bulk
# operations, a 1M replace under load. Minutes each; not part of `make test`.
test-long: $(BIN)/.installed
	$(BIN)/pytest -q -m long $(PYTEST_ARGS)

# The soak (issue 22, not part of `make test`): the real stack for SOAK_SECONDS under concurrent
# writers, bulk operations, reports and faults (worker kill -9, Redis stopped, backends ended),
# then exact checks (tests/api/test_soak.py). About SOAK_SECONDS + 1-2 minutes.
SOAK_SECONDS ?= 600
soak: $(BIN)/.installed
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -q -s -m soak -o faulthandler_timeout=$$(( $(SOAK_SECONDS) + 1200 )) tests/api/test_soak.py $(PYTEST_ARGS)

# Browser tests again, saving every page's screenshot to docs/screenshots/.
screenshots: $(BIN)/.installed
	SCREENSHOTS=1 $(BIN)/pytest -q -m browser tests/web

# Benchmarks: starts its own database, Redis and gunicorn on 127.0.0.1, prints a table.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The bench's peer (issue 11): Unleash 7.5.1 from npm into instance/peers/unleash (git-ignored);
# then `make bench` (or BENCH_ARGS="--only peer") measures it beside our hot read.
bench-peer:
	bench/peers/install_unleash.sh

# The same commands as .pre-commit-config.yaml's hooks: ruff, its formatting, mypy, and the
# layering as import-linter contracts (pyproject.toml [tool.importlinter]).
lint: $(BIN)/.installed
	$(BIN)/ruff check webapp tests bench devstack
	$(BIN)/ruff format --check webapp tests bench devstack
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV)
