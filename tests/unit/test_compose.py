"""docker-compose.yml cannot run here (no Docker engine): its structure is checked instead.

Every service's command must exist in the code, every queue must have its worker, beat
must be single, migrations must run before the services, secrets must be required, and
every variable the services get must be one the code reads.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from celeryconfig import QUEUES
from domain.core.config import PROJECT_ROOT
from domain.operations import routes
from ingress.cli import AI_POOLS, WORKER_POOLS, main, worker_command

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = {name for name, service in SERVICES.items() if service.get("build")}
SOURCES = [
    PROJECT_ROOT / "celeryconfig.py",
    *(p for d in ("domain", "ingress", "tasks", "beat", "realtime") for p in (PROJECT_ROOT / d).rglob("*.py")),
]


def command(name: str) -> list[str]:
    return [str(part) for part in SERVICES[name].get("command", [])]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_queue_has_exactly_one_worker_service_with_its_pool():
    workers = {name: command(name) for name in SERVICES if command(name)[:4] == ["celery", "-A", "tasks", "worker"]}
    served = sorted(option(argv, "--queues") for argv in workers.values())
    assert served == sorted(QUEUES)
    assert {route.queue for route in vars(routes).values() if isinstance(route, routes.TaskRoute)} <= set(QUEUES)
    for argv in workers.values():
        queue = option(argv, "--queues")
        assert f"worker-{queue}" in workers
        pool = ["--pool", option(argv, "--pool"), "--concurrency", option(argv, "--concurrency")]
        if queue == "ai":  # the pool follows AI_PROVIDER: prefork by default, gevent for a model
            assert pool == ["--pool", "${AI_WORKER_POOL:-prefork}", "--concurrency", "${AI_WORKER_CONCURRENCY:-2}"]
            assert AI_POOLS["local"] == ["--pool", "prefork", "--concurrency", "2"]
        else:
            assert pool == WORKER_POOLS[queue]
        # The same flags as `deepref run` gives its workers, pool aside.
        flags = {part for part in worker_command([queue], []) if part.startswith("--without")}
        assert flags == {"--without-mingle", "--without-gossip"} and flags <= set(argv)


def test_exactly_one_beat_and_flower_behind_basic_auth():
    beats = [name for name in SERVICES if command(name)[:4] == ["celery", "-A", "tasks", "beat"]]
    assert beats == ["beat"] and "deploy" not in SERVICES["beat"] and "scale" not in SERVICES["beat"]
    flower = command("flower")
    assert flower[:4] == ["celery", "-A", "tasks", "flower"]
    assert any(part.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?") for part in flower)


def test_background_services_yield_the_cpu_to_the_ingress_and_the_relay():
    celery = {name for name in APP_SERVICES if command(name)[:3] == ["celery", "-A", "tasks"]}
    assert len(celery) == len(QUEUES) + 2  # the workers, beat and Flower
    assert {SERVICES[name].get("cpu_shares") for name in celery} == {256}
    assert SERVICES["ingress"].get("cpu_shares", 1024) == SERVICES["relay"].get("cpu_shares", 1024) == 1024


def test_the_commands_exist_in_the_code():
    assert command("migrate") == ["deepref", "migrate"]
    with pytest.raises(SystemExit) as shown:  # `deepref migrate --help` exists (and exits 0)
        main(["migrate", "--help"])
    assert shown.value.code == 0
    for name in ("ingress", "relay"):
        argv = command(name)
        assert argv[0] == "gunicorn"
        assert (PROJECT_ROOT / option(argv, "-c")).is_file()
        module, attribute = argv[-1].split(":")
        source = (PROJECT_ROOT / (module.replace(".", "/") + ".py")).read_text()
        # Built on first access (module __getattr__), so that importing the module needs no settings.
        assert f'if name == "{attribute}":' in source, f"{argv[-1]} is not defined"


def test_migrations_run_once_before_every_app_service():
    for name in APP_SERVICES - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert (
        "healthcheck" in SERVICES["postgres"] and "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    )
    # The broker must never drop messages: no eviction, append-only.
    assert {"--appendonly", "--maxmemory-policy", "noeviction"} <= set(SERVICES["redis"]["command"])


def test_secrets_are_required_and_every_variable_is_one_the_code_reads():
    environment: dict[str, str] = COMPOSE["x-app-env"]
    for secret in ("SECRET_KEY", "MASTER_KEY"):
        assert environment[secret].startswith(f"${{{secret}:?"), secret
    assert ":?" in environment["DATABASE_URL"] and ":?" in SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', "\n".join(path.read_text() for path in SOURCES)))
    unknown = sorted(set(environment) - read)
    assert unknown == [], f"set in docker-compose.yml but read nowhere: {unknown}"
    for service in APP_SERVICES:
        assert SERVICES[service]["environment"] == environment, service


def test_the_readme_explains_scaling_the_ai_worker():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "docker compose up --scale worker-ai=4" in readme
