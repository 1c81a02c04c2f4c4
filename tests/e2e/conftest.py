"""What every end-to-end test's processes get: their own database, secrets, ports and var dir."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from domain.core.embedded import free_port


def process_env(database_url: str, redis_url: str, var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment for `deepref run` (or its pieces) on free loopback ports."""
    return {
        **os.environ,
        "DEEPREF_ENV": "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DEEPREF_VAR_DIR": str(var_dir),
        "INGRESS_PORT": str(free_port()),
        "RELAY_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "BCRYPT_ROUNDS": "4",
        **overrides,
    }
