"""What every end-to-end test's processes get: their own database, secrets, ports and var dir.

And the worker farm's fixtures: its environment (`farm_env`) and the processes started on it.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from domain.core.embedded import free_ports
from tests.conftest import PASSWORD, create_database, redis_db_url, worker_id, worker_number
from tests.e2e.helpers import DEEPREF, Processes


def process_env(database_url: str, redis_url: str, var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment for `deepref run` (or its pieces) on free loopback ports."""
    ingress_port, relay_port, flower_port = free_ports(3)  # distinct: two probes in turn may get the same port
    return {
        **os.environ,
        "DEEPREF_ENV": "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DEEPREF_VAR_DIR": str(var_dir),
        "INGRESS_PORT": str(ingress_port),
        "RELAY_PORT": str(relay_port),
        "FLOWER_PORT": str(flower_port),
        "BCRYPT_ROUNDS": "4",
        **overrides,
    }


@pytest.fixture
def farm_env(servers: Any, tmp_path: Path) -> dict[str, str]:
    redis_url = redis_db_url(servers.redis_url, 15 - worker_number() % 2)
    redis.Redis.from_url(redis_url).flushdb()
    database_url = create_database(servers.database_url, f"deepref_farm_{worker_id()}")
    return process_env(
        database_url,
        redis_url,
        tmp_path,
        WEB_CONCURRENCY="1",
        OUTBOX_RELAY_SECONDS="0.5",
        OUTBOX_GRACE_SECONDS="2",
        RATE_LIMIT_PER_MINUTE="100000",
        DEEPREF_ADMIN_PASSWORD=PASSWORD,
    )


@pytest.fixture
def processes(farm_env: dict[str, str]) -> Iterator[Processes]:
    subprocess.run([DEEPREF, "migrate"], env=farm_env, check=True, capture_output=True, timeout=60)
    started = Processes(farm_env)
    yield started
    started.stop_all()
