"""`make bench`, the worker farm: accept-to-event latency through ingress, broker, worker and relay.

An administrator posts `POST /api/v1/operations/probe` (a no-op operation on the `sync`
queue) one at a time, at low load, and times each from sending the POST to receiving its
`operation.updated` event with status `succeeded` on an SSE stream from the relay. One
Celery worker (gevent pool, as `make run` starts it) serves the `sync` queue. Also timed:
the POST alone (the 202), so the queue + worker + relay share is their difference.

Called by loadtests/bench.py with the ingress it already runs; starts the relay and the
worker itself and stops them afterwards. Their logs are var/bench/relay.log and worker.log.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from domain.core.config import PROJECT_ROOT
from domain.core.embedded import free_port
from loadtests.servers import API, HOST, PASSWORD, VAR, request

PROBES = int(os.environ.get("BENCH_PROBES", "200"))
READY_TIMEOUT = 60.0
EVENT_TIMEOUT = 10.0


@dataclass(frozen=True)
class PipelineResult:
    probes: int
    accept_to_event_ms: dict[str, float]
    accept_ms: dict[str, float]
    lost: int


def create_admin(env: Mapping[str, str], port: int) -> str:
    """Create an administrator with the CLI, log in, and return the access token."""
    email = f"bench-admin-{time.time_ns()}@example.com"
    deepref = str(Path(sys.executable).with_name("deepref"))
    subprocess.run(
        [deepref, "create-admin", "--email", email, "--name", "Bench Admin"],
        env={**env, "DEEPREF_ADMIN_PASSWORD": PASSWORD},
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    status, payload = request(port, "POST", f"{API}/auth/login", {"email": email, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"admin login answered {status}: {payload[:300]!r}")
    return str(json.loads(payload)["accessToken"])


def measure(env: Mapping[str, str], ingress_port: int, token: str, probes: int = PROBES) -> PipelineResult:
    """Time `probes` probes one after the other; the relay and a `sync` worker run meanwhile."""
    # Probes accepted by the throughput run are still queued: start from an empty queue.
    redis.Redis.from_url(env.get("BROKER_URL") or env["REDIS_URL"]).delete("sync")
    relay_port = free_port()
    with _process("relay", _relay_command(relay_port), env), _process("worker", _worker_command(), env):
        _wait_for_port(relay_port)
        stream = EventStream(relay_port, token)
        try:
            time.sleep(2.0)  # the worker connects to the broker
            return _probe_many(ingress_port, token, stream, probes)
        finally:
            stream.close()


def _probe_many(port: int, token: str, stream: EventStream, probes: int) -> PipelineResult:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    totals: list[float] = []
    accepts: list[float] = []
    lost = 0
    for _ in range(probes + 5):  # the first five warm up the worker and the pools
        started = time.perf_counter()
        connection.request("POST", f"{API}/operations/probe", headers=headers)
        response = connection.getresponse()
        body = response.read()
        accepted = time.perf_counter()
        if response.status != 202:
            raise RuntimeError(f"probe answered {response.status}: {body[:300]!r}")
        finished = stream.wait_for(json.loads(body)["operation"]["id"], EVENT_TIMEOUT)
        if finished is None:
            lost += 1
            continue
        totals.append(finished - started)
        accepts.append(accepted - started)
    connection.close()
    return PipelineResult(len(totals[5:]), _summary(totals[5:]), _summary(accepts[5:]), lost)


def _summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


class EventStream:
    """One SSE connection read in a thread; records when each operation's `succeeded` event came."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        with suppress(OSError):
            while chunk := self.sock.recv(65536):
                now = time.perf_counter()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._line(line, now)

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data: "):
            return
        with suppress(ValueError):
            data = json.loads(line[6:])
            if isinstance(data, dict) and data.get("status") == "succeeded":
                with self.changed:
                    self.arrived[str(data["id"])] = now
                    self.changed.notify_all()

    def wait_for(self, operation_id: str, timeout: float) -> float | None:
        with self.changed:
            self.changed.wait_for(lambda: operation_id in self.arrived, timeout)
            return self.arrived.get(operation_id)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def _relay_command(port: int) -> list[str]:
    conf = str(PROJECT_ROOT / "realtime" / "gunicorn.conf.py")
    return [sys.executable, "-m", "gunicorn", "-c", conf, "--bind", f"{HOST}:{port}", "realtime.app:app"]


def _worker_command() -> list[str]:
    from ingress.cli import WORKER_POOLS, worker_command

    return worker_command(["sync"], WORKER_POOLS["sync"])


@contextmanager
def _process(name: str, command: list[str], env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with (VAR / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=dict(env), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with suppress(OSError, http.client.HTTPException):
            if request(port, "GET", "/healthz", timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"relay did not answer on port {port}; see {VAR / 'relay.log'}")


def render(result: PipelineResult) -> str:
    total, accept = result.accept_to_event_ms, result.accept_ms
    return "\n".join(
        [
            "",
            f"Accept-to-event, {result.probes} probes one at a time, one `sync` worker (gevent):",
            "| measure | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|",
            f"| POST /operations/probe → 202 | {accept.get('p50')} | {accept.get('p99')} | {accept.get('max')} |",
            f"| POST → `succeeded` event over SSE | {total.get('p50')} | {total.get('p99')} | {total.get('max')} |",
            f"events not received within {EVENT_TIMEOUT:g} s: {result.lost}",
        ]
    )


def as_json(result: PipelineResult) -> dict[str, Any]:
    return {
        "probes": result.probes,
        "acceptToEventMs": result.accept_to_event_ms,
        "acceptMs": result.accept_ms,
        "lost": result.lost,
    }
