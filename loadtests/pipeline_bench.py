"""`make bench`, the worker farm: accept-to-event latency through ingress, broker, worker and relay.

An administrator posts `POST /api/v1/operations/probe` (a no-op operation on the `sync`
queue) one at a time, at low load, and times each from sending the POST to receiving its
`operation.updated` event with status `succeeded` on an SSE stream from the relay. One
Celery worker (gevent pool, as `make run` starts it) serves the `sync` queue. Also timed:
the POST alone (the 202), so the queue + worker + relay share is their difference.

Called by loadtests/bench.py with the ingress it already runs; starts the relay and the
worker itself and stops them afterwards. Their logs are var/bench/relay.log and worker.log.
The relay, worker and SSE helpers here serve loadtests/reference_pipeline.py as well.
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
from collections.abc import Collection, Iterator, Mapping
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
# The line a Celery worker logs once it consumes (its JSON log's message ends so).
WORKER_READY = b'ready."'


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
    with background("relay", relay_command(relay_port), env), background("worker", worker_command("sync"), env):
        wait_for_relay(relay_port)
        wait_for_worker(VAR / "worker.log")
        stream = EventStream(relay_port, token)
        try:
            stream.wait_open(READY_TIMEOUT)
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
        totals.append(finished[1] - started)
        accepts.append(accepted - started)
    connection.close()
    return PipelineResult(len(totals[5:]), summary(totals[5:]), summary(accepts[5:]), lost)


def summary(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and max in ms of durations in seconds (empty when there are none)."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


class EventStream:
    """One SSE connection read in a thread; records when each (object id, status) first came in an event's data."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.arrived: dict[tuple[str, str], float] = {}
        self.opened = threading.Event()
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        with suppress(OSError):
            while chunk := self.sock.recv(65536):
                now = time.perf_counter()
                # The relay registers the stream before it sends the first bytes.
                self.opened.set()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._line(line, now)

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data: "):
            return
        with suppress(ValueError):
            data = json.loads(line[6:])
            if isinstance(data, dict) and "id" in data and "status" in data:
                with self.changed:
                    self.arrived.setdefault((str(data["id"]), str(data["status"])), now)
                    self.changed.notify_all()

    def wait_open(self, timeout: float) -> None:
        if not self.opened.wait(timeout):
            raise RuntimeError(f"the relay did not open an event stream within {timeout:g} s")

    def wait_for(
        self, object_id: str, timeout: float, statuses: Collection[str] = ("succeeded",)
    ) -> tuple[str, float] | None:
        """The first of `statuses` an event gave `object_id`, and when it was read; None after `timeout`."""

        def found() -> tuple[str, float] | None:
            return next(((s, self.arrived[object_id, s]) for s in statuses if (object_id, s) in self.arrived), None)

        with self.changed:
            self.changed.wait_for(lambda: found() is not None, timeout)
            return found()

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def relay_command(port: int) -> list[str]:
    conf = str(PROJECT_ROOT / "realtime" / "gunicorn.conf.py")
    return [sys.executable, "-m", "gunicorn", "-c", conf, "--bind", f"{HOST}:{port}", "realtime.app:app"]


def worker_command(queue: str) -> list[str]:
    """A Celery worker for `queue` with the pool `deepref run` gives it."""
    from ingress.cli import WORKER_POOLS
    from ingress.cli import worker_command as command

    return command([queue], WORKER_POOLS[queue])


@contextmanager
def background(name: str, command: list[str], env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` in its own session, output to var/bench/<name>.log; SIGTERM (then SIGKILL) on exit."""
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


def wait_for_relay(port: int) -> None:
    """Wait until the relay answers /healthz (it subscribes to events when its first stream opens)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with suppress(OSError, http.client.HTTPException):
            if request(port, "GET", "/healthz", timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"relay did not answer on port {port}; see {VAR / 'relay.log'}")


def wait_for_worker(log: Path) -> None:
    """Wait until the Celery worker writing `log` says it is ready."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with suppress(OSError):
            if WORKER_READY in log.read_bytes():
                return
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not get ready within {READY_TIMEOUT:g} s; see {log}")


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
