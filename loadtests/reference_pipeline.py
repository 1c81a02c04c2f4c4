"""`make bench`, the reference workflow end to end: a referee's answer → its verification over SSE.

BENCH_REFERENCE_SAMPLES (200) referee submissions, one at a time (low load), after five
unmeasured ones: each timed from sending POST /api/v1/referee/{token}/response until the
candidate's SSE stream from the relay carries `reference.updated` with status `verified` or
`flagged`, the local AI provider having verified it on the `ai` queue. Also timed: the 202
alone. Target: p99 < 200 ms.

`prepare`, early in the run: candidates with ten references each, their links delivered by
an `email` worker to the file outbox, read back and opened once. `measure`, after the
throughput runs: the relay and the `ai`, `email` and `audit` workers (the pools `deepref run`
gives them) against the ingress loadtests/bench.py runs, their queues emptied first of what
the throughput runs left, one SSE stream per candidate. Each referee answers from an address
and browser other than the candidate's, with written answers of their own, and (thanks to
the throughput runs in between) long enough after opening the link: nothing suspicious, so
the references come out `verified`; the fraud signals raised are counted and printed.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from domain.core.embedded import free_port
from loadtests import reference_bench as prep
from loadtests.pipeline_bench import (
    EVENT_TIMEOUT,
    READY_TIMEOUT,
    EventStream,
    background,
    relay_command,
    summary,
    wait_for_relay,
    wait_for_worker,
    worker_command,
)
from loadtests.servers import API, HOST, VAR, Account, register_accounts, request

SAMPLES = int(os.environ.get("BENCH_REFERENCE_SAMPLES", "200"))
WARMUP_SAMPLES = 5
TARGET_P99_MS = 200.0
WORKERS = ("ai", "email", "audit")
OUTCOMES = ("verified", "flagged")
PREFIX = "pipeline-referee-"


@dataclass(frozen=True)
class SubmissionResult:
    samples: int
    to_event_ms: dict[str, float]
    accept_ms: dict[str, float]
    outcomes: dict[str, int]
    signals: dict[str, int]
    lost: int


@dataclass(frozen=True)
class Sample:
    """One prepared submission: the link, its reference and its candidate."""

    link: prep.Link
    reference_id: str
    candidate: int


@dataclass(frozen=True)
class Prepared:
    """The candidates and their opened links; answers sent after `plausible_at` (monotonic) look human."""

    candidates: list[Account]
    samples: list[Sample]
    plausible_at: float


def prepare(env: Mapping[str, str], port: int, samples: int = SAMPLES) -> Prepared:
    """Candidates with ten references each, their links delivered by an `email` worker and opened once.

    Called early in the run, so that by the time of `measure` the links have been open as long as
    a referee takes to answer, and the references come out `verified`.
    """
    total = samples + WARMUP_SAMPLES
    candidates = register_accounts(port, math.ceil(total / prep.REQUESTS_PER_CANDIDATE), prefix="pipeline")
    prep.clear_outbox(env)
    with background("worker-email-pipeline", worker_command("email"), env):
        wait_for_worker(VAR / "worker-email-pipeline.log")
        created = prep.create_references(port, candidates, PREFIX)[:total]
        prep.drain(prep.broker(env), "email")
    by_recipient = prep.read_links(prep.outbox(env), PREFIX)
    delivered = [c for c in created if c.referrer_email in by_recipient]
    if len(delivered) < len(created):
        raise RuntimeError(f"only {len(delivered)} of {len(created)} links reached the outbox")
    links = prep.open_links(port, [by_recipient[c.referrer_email] for c in delivered], seed=1_000_000)
    plausible_at = time.monotonic() + max(map(reading_seconds, links), default=0.0)
    return Prepared(
        candidates,
        [Sample(k, c.reference_id, c.candidate) for k, c in zip(links, delivered, strict=True)],
        plausible_at,
    )


def reading_seconds(link: prep.Link) -> float:
    """How long after opening the server finds an answer plausible (domain/references/signals.py).

    At least 30 s, else 5 s a question and 20 s a written answer; sooner raises the
    `fast_submission` signal, a strong one (the reference is flagged) under half that.
    """
    answers = json.loads(link.body)["answers"]
    written = sum(1 for answer in answers if "text" in answer)
    return max(30.0, 5.0 * len(answers) + 20.0 * written) + 1.0


def measure(env: Mapping[str, str], ingress_port: int, prepared: Prepared) -> SubmissionResult:
    """Time the prepared submissions one after the other (the first few unmeasured), workers and relay running."""
    # What the throughput runs queued would keep the workers busy: start from empty queues.
    prep.broker(env).delete(*WORKERS)
    wait = prepared.plausible_at - time.monotonic()
    if wait > 0:
        print(
            f"bench: waiting {wait:.0f} s for the links to have been open as long as a referee takes", file=sys.stderr
        )
        time.sleep(wait)
    relay_port = free_port()
    with farm(env, relay_port):
        with streams(relay_port, prepared.candidates) as opened:
            result = submit_all(ingress_port, prepared.samples, opened)
        signals = signals_seen(ingress_port, prepared.samples[WARMUP_SAMPLES:], prepared.candidates)
    return SubmissionResult(**result, signals=signals)


@contextmanager
def farm(env: Mapping[str, str], relay_port: int) -> Iterator[None]:
    """The relay and one worker per queue in WORKERS, each ready."""
    with ExitStack() as stack:
        stack.enter_context(background("relay-references", relay_command(relay_port), env))
        for queue in WORKERS:
            stack.enter_context(background(f"worker-{queue}", worker_command(queue), env))
        wait_for_relay(relay_port)
        for queue in WORKERS:
            wait_for_worker(VAR / f"worker-{queue}.log")
        yield


@contextmanager
def streams(relay_port: int, candidates: Sequence[Account]) -> Iterator[list[EventStream]]:
    """One open SSE stream per candidate."""
    opened: list[EventStream] = []
    try:
        for candidate in candidates:
            opened.append(EventStream(relay_port, candidate.access_token))
        for stream in opened:
            stream.wait_open(READY_TIMEOUT)
        yield opened
    finally:
        for stream in opened:
            stream.close()


def submit_all(port: int, prepared: Sequence[Sample], opened: Sequence[EventStream]) -> dict[str, Any]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    totals: list[float] = []
    accepts: list[float] = []
    outcomes: Counter[str] = Counter()
    lost = 0
    for number, sample in enumerate(prepared):
        headers = {"Content-Type": "application/json", **prep.referee_headers(number)}
        started = time.perf_counter()
        connection.request("POST", f"{API}/referee/{sample.link.token}/response", sample.link.body, headers)
        response = connection.getresponse()
        body = response.read()
        accepted = time.perf_counter()
        if response.status != 202:
            raise RuntimeError(f"referee submission answered {response.status}: {body[:300]!r}")
        # The first submissions also wait for the workers' pools and connections to warm up.
        timeout = EVENT_TIMEOUT if number >= WARMUP_SAMPLES else READY_TIMEOUT
        event = opened[sample.candidate].wait_for(sample.reference_id, timeout, OUTCOMES)
        if number < WARMUP_SAMPLES:
            continue
        if event is None:
            lost += 1
            continue
        outcomes[event[0]] += 1
        totals.append(event[1] - started)
        accepts.append(accepted - started)
    connection.close()
    return {
        "samples": len(totals),
        "to_event_ms": summary(totals),
        "accept_ms": summary(accepts),
        "outcomes": dict(outcomes),
        "lost": lost,
    }


def signals_seen(port: int, prepared: Sequence[Sample], candidates: Sequence[Account]) -> dict[str, int]:
    """How often each fraud signal was raised on the measured references (read back by their candidates)."""
    seen: Counter[str] = Counter()
    for sample in prepared:
        token = candidates[sample.candidate].access_token
        status, payload = request(
            port, "GET", f"{API}/references/{sample.reference_id}", headers={"Authorization": f"Bearer {token}"}
        )
        verification = json.loads(payload).get("verification") if status == 200 else None
        for signal in (verification or {}).get("signals", []):
            seen[signal["code"]] += 1
    return dict(seen)


def render(result: SubmissionResult) -> str:
    total, accept = result.to_event_ms, result.accept_ms
    p99 = total.get("p99")
    verdict = "no samples" if p99 is None else ("met" if p99 < TARGET_P99_MS else "MISSED")
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(result.outcomes.items())) or "none"
    signals = ", ".join(f"{code} {count}" for code, count in sorted(result.signals.items())) or "none"
    return "\n".join(
        [
            "",
            f"Referee answer to verification, {result.samples} submissions one at a time, local AI provider, "
            f"workers {', '.join(WORKERS)} (pools as `deepref run`):",
            "| measure | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|",
            f"| POST /referee/{{token}}/response → 202 | {accept.get('p50')} | {accept.get('p99')} "
            f"| {accept.get('max')} |",
            f"| POST → `reference.updated` verified/flagged over SSE | {total.get('p50')} | {p99} "
            f"| {total.get('max')} |",
            f"target p99 < {TARGET_P99_MS:.0f} ms: {p99} ms, {verdict}",
            f"outcomes: {outcomes}; fraud signals raised: {signals}; "
            f"events not received within {EVENT_TIMEOUT:g} s: {result.lost}",
        ]
    )


def as_json(result: SubmissionResult) -> dict[str, Any]:
    return {
        "samples": result.samples,
        "submitToEventMs": result.to_event_ms,
        "acceptMs": result.accept_ms,
        "targetP99Ms": TARGET_P99_MS,
        "outcomes": result.outcomes,
        "signals": result.signals,
        "lost": result.lost,
    }
