"""What the HTTP fakes share: serving a handler on a free loopback port in a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HOST = "127.0.0.1"


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of concurrent clients must not overflow the listen backlog (default 5).
    request_queue_size = 1024


class ServedFake:
    """Start, stop and `with` for a fake whose `handler()` answers its requests."""

    name = "fake"

    def __init__(self) -> None:
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {self.name} is not running")
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._server = LoopbackServer((HOST, 0), self.handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
