"""Closed-loop HTTP load generator (gevent + geventhttpclient): one process of `loadtests.bench`.

`python -m loadtests.loadgen PLAN.json` runs the plan's virtual clients in one process. Each
client owns one keep-alive connection to 127.0.0.1 and sends its next request as soon as it
has read the previous answer, so the number of clients is the number of requests in flight.
The generator shares the cores with the servers it measures, so it keeps its own work per
request small: a request's bytes are encoded once (again only when a chained body changes),
sent on a gevent socket, and the answer is parsed by geventhttpclient's C HTTP parser.

All clients start at `start_at` (wall clock, so several generator processes follow one
schedule), run `warmup` seconds unmeasured, then `duration` seconds measured. A 2xx answer
counts toward throughput and latency when it completes inside the measured window; latency
runs from just before the request is sent until its body is read, so it includes the time
the client waits for its own process to schedule it. Every non-2xx answer and every transport
failure, in warm-up or window, is an error.

A chained client (refresh-token rotation) sends the `refreshToken` of its previous answer as
the next body. Its first failure ends it: its token may have been spent, and a token used
twice revokes the whole family, so every later request would fail as well.

A scripted plan (one with `steps`) sends each step once, whichever client is free next takes
the next one: requests that can be made only once, such as a referee's answer through a
single-use link. A client that finds no step left stops; the outcome records when that first
happened (`exhausted_at`) and when each measured answer completed, so the caller can end the
window there, while every client was still sending.

The outcome (counts and every measured latency) is printed as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import gevent  # type: ignore[import-untyped]
import gevent.socket  # type: ignore[import-untyped]
from geventhttpclient.response import HTTPSocketResponse
from pydantic import BaseModel, Field

HOST = "127.0.0.1"
# After a transport failure, pause before reconnecting so a refused port is not hammered.
FAILURE_PAUSE = 0.05
# Longest a plan may ask its clients to wait before starting.
MAX_START_DELAY = 30.0


class Step(BaseModel):
    """One request of a scripted client, sent once: its path, body and headers beyond the client's."""

    path: str
    body: str = ""
    headers: dict[str, str] = Field(default_factory=dict)


class ClientSpec(BaseModel):
    """One virtual client: its headers and (for POST) its first body, a JSON text."""

    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""


class Plan(BaseModel):
    port: int
    method: Literal["GET", "POST"]
    path: str
    chain_refresh: bool = False
    clients: list[ClientSpec]
    # Shared by the clients, in order, each sent once (the step's headers added to the client's).
    steps: list[Step] = Field(default_factory=list)
    start_at: float
    warmup: float
    duration: float
    timeout: float = 10.0

    @property
    def window(self) -> tuple[float, float]:
        """Wall-clock start and end of the measured window."""
        begin = self.start_at + self.warmup
        return begin, begin + self.duration


class Outcome(BaseModel):
    """`exchanges`: every answer or failure, warm-up included; `completed`: 2xx inside the window.

    Scripted plans only: `finished_at`, the wall-clock end of each measured exchange (in the
    order of `latencies_ms`), and `exhausted_at`, when a client first found no step left.
    """

    exchanges: int = 0
    completed: int = 0
    latencies_ms: list[float] = Field(default_factory=list)
    errors: int = 0
    failures: dict[str, int] = Field(default_factory=dict)
    stopped_clients: int = 0
    finished_at: list[float] = Field(default_factory=list)
    exhausted_at: float | None = None

    def latencies_before(self, cut: float) -> list[float]:
        """The measured latencies of exchanges that ended before `cut` (all of them without timestamps)."""
        if not self.finished_at:
            return self.latencies_ms
        return [ms for ms, end in zip(self.latencies_ms, self.finished_at, strict=True) if end < cut]


class Tally:
    """What the clients of this process observed."""

    def __init__(self, timestamps: bool = False) -> None:
        self.exchanges = 0
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.stopped = 0
        self.timestamps = timestamps
        self.finished_at: list[float] = []
        self.exhausted_at: float | None = None

    def success(self, seconds: float, measured: bool) -> None:
        self.exchanges += 1
        if measured:
            self.latencies.append(round(seconds * 1000, 3))
            if self.timestamps:
                self.finished_at.append(time.time())

    def exhausted(self) -> None:
        now = time.time()
        self.exhausted_at = now if self.exhausted_at is None else min(self.exhausted_at, now)

    def failure(self, reason: str) -> None:
        self.exchanges += 1
        self.failures[reason] += 1

    def outcome(self) -> Outcome:
        return Outcome(
            exchanges=self.exchanges,
            completed=len(self.latencies),
            latencies_ms=self.latencies,
            errors=sum(self.failures.values()),
            failures=dict(self.failures),
            stopped_clients=self.stopped,
            finished_at=self.finished_at,
            exhausted_at=self.exhausted_at,
        )


def encode_request(plan: Plan, headers: dict[str, str], body: str, path: str = "") -> bytes:
    """The request's bytes, built once per body rather than once per request."""
    lines = [f"{plan.method} {path or plan.path} HTTP/1.1", f"Host: {HOST}:{plan.port}", "User-Agent: deepref-loadgen"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    payload = body.encode()
    if plan.method == "POST":
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class VirtualClient:
    """One keep-alive connection sending pre-encoded requests; answers parsed by geventhttpclient."""

    def __init__(self, plan: Plan, spec: ClientSpec, tally: Tally, steps: Iterator[Step] | None = None) -> None:
        self.plan = plan
        self.headers = spec.headers
        self.request = encode_request(plan, spec.headers, spec.body)
        self.steps = steps
        self.tally = tally
        self.sock: Any = None

    def run(self) -> None:
        """Send requests back to back until the measured window ends (or a chain breaks, or the script ends)."""
        begin, end = self.plan.window
        try:
            while time.time() < end:
                if not self._next_step():
                    self.tally.exhausted()
                    return
                if not self._exchange(begin, end):
                    self.tally.stopped += 1
                    return
        finally:
            self._disconnect()

    def _exchange(self, begin: float, end: float) -> bool:
        """One request and its answer; False when this client cannot go on."""
        started = time.perf_counter()
        try:
            status, payload = self._send()
        except Exception as exc:
            self.tally.failure(type(exc).__name__)
            self._disconnect()
            gevent.sleep(FAILURE_PAUSE)
            return not self.plan.chain_refresh
        elapsed = time.perf_counter() - started
        if not 200 <= status < 300:
            self.tally.failure(f"HTTP {status}")
            return not self.plan.chain_refresh
        if self.plan.chain_refresh and not self._chain(payload):
            return False
        self.tally.success(elapsed, measured=begin <= time.time() < end)
        return True

    def _next_step(self) -> bool:
        """Take the plan's next step as the request; False when none is left (always True without steps)."""
        if self.steps is None:
            return True
        step = next(self.steps, None)
        if step is None:
            return False
        self.request = encode_request(self.plan, {**self.headers, **step.headers}, step.body, step.path)
        return True

    def _send(self) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = gevent.socket.create_connection((HOST, self.plan.port), timeout=self.plan.timeout)
        self.sock.sendall(self.request)
        response = HTTPSocketResponse(self.sock)
        payload = response.read()
        if response.should_close():
            self._disconnect()
        return response.status_code, payload

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _chain(self, payload: bytes) -> bool:
        """Take the next body from the answer's `refreshToken`; False when there is none."""
        try:
            token = json.loads(payload)["refreshToken"]
        except (ValueError, KeyError, TypeError):
            self.tally.failure("answer without refreshToken")
            return False
        self.request = encode_request(self.plan, self.headers, json.dumps({"refreshToken": token}))
        return True


def run_plan(plan: Plan) -> Outcome:
    """Run every client of the plan to the end of its window (bounded by the network timeout)."""
    delay = plan.start_at - time.time()
    if delay > MAX_START_DELAY:
        raise ValueError(f"start_at is {delay:.0f} s away; at most {MAX_START_DELAY:.0f} s is allowed")
    tally = Tally(timestamps=bool(plan.steps))
    # One iterator for all clients: greenlets take turns, so no step is sent twice.
    steps = iter(plan.steps) if plan.steps else None
    clients = [VirtualClient(plan, spec, tally, steps) for spec in plan.clients]
    gevent.sleep(max(0.0, delay))
    greenlets = [gevent.spawn(client.run) for client in clients]
    gevent.joinall(greenlets, timeout=max(0.0, plan.window[1] - time.time()) + plan.timeout + 1)
    late = [greenlet for greenlet in greenlets if not greenlet.ready()]
    gevent.killall(late, timeout=1)
    tally.stopped += len(late)
    return tally.outcome()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m loadtests.loadgen PLAN.json", file=sys.stderr)
        return 2
    plan = Plan.model_validate_json(Path(args[0]).read_text())
    sys.stdout.write(run_plan(plan).model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
