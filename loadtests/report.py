"""The results of `make bench` and how they are shown.

The measurement of one load, the bare/ingress comparison per endpoint, the peak RSS and the
ingress log's summary, gathered in a `Report`; rendered as the markdown on stdout and as the JSON
in var/bench/results.json.
"""

from __future__ import annotations

import json
import math
import os
import runpy
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.loadgen import Outcome
from loadtests.servers import API, BCRYPT_ROUNDS, GUNICORN_CONF, UNLIMITED_RATE, CpuSample, peak_rss_kb

if TYPE_CHECKING:
    from loadtests.bench import Config

TARGET_RATIO = 0.30
TARGET_RATIO_ENDPOINT = f"GET {API}/users/me"
TARGET_P99_MS = 100.0
TARGET_CONCURRENCY = 100
# Cores used by other processes during a bare run above which its figures are not trustworthy.
NOISY_CORES = 0.25


@dataclass(frozen=True)
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    # The measured window: the plan's, or shorter when a scripted plan's steps ran out.
    seconds: float
    errors: int
    failures: dict[str, int]
    stopped_clients: int
    server_cpu_ms: float
    other_cpu_cores: float

    @classmethod
    def of(
        cls, outcomes: Sequence[Outcome], window: tuple[float, float], before: CpuSample, after: CpuSample
    ) -> Measurement:
        """Merge the generators' outcomes, with the CPU used between two samples around the run.

        The window (wall clock) ends early when a scripted plan's steps ran out: past that,
        fewer clients than planned were sending.
        """
        begin, end = window
        cut = min([end, *(o.exhausted_at for o in outcomes if o.exhausted_at is not None)])
        seconds = max(0.0, cut - begin)
        server_cpu = after.workers - before.workers
        other_cpu = (after.machine - before.machine) - server_cpu - (after.children - before.children)
        latencies = sorted(value for outcome in outcomes for value in outcome.latencies_before(cut))
        failures: dict[str, int] = {}
        for outcome in outcomes:
            for reason, count in outcome.failures.items():
                failures[reason] = failures.get(reason, 0) + count
        return cls(
            rps=len(latencies) / seconds if seconds else 0.0,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            completed=len(latencies),
            seconds=round(seconds, 3),
            errors=sum(outcome.errors for outcome in outcomes),
            failures=failures,
            stopped_clients=sum(outcome.stopped_clients for outcome in outcomes),
            server_cpu_ms=round(1000 * server_cpu / max(1, sum(outcome.exchanges for outcome in outcomes)), 3),
            other_cpu_cores=round(max(0.0, other_cpu) / max(1e-3, after.at - before.at), 2),
        )


@dataclass(frozen=True)
class Comparison:
    endpoint: str
    bare: Measurement
    ingress: Measurement
    # What the run needed beyond the table (scripted scenarios: the requests prepared).
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ingress.rps / self.bare.rps if self.bare.rps else 0.0


@dataclass
class PeakMemory:
    """The largest VmHWM seen for each ingress worker pid, in kB."""

    idle_kb: int = 0
    peaks_kb: dict[int, int] = field(default_factory=dict)

    def observe(self, pids: Sequence[int]) -> None:
        for pid in pids:
            with suppress(OSError, ValueError):
                self.peaks_kb[pid] = max(self.peaks_kb.get(pid, 0), peak_rss_kb(pid))

    @property
    def peak_mb(self) -> float:
        return max(self.peaks_kb.values(), default=0) / 1024


@dataclass(frozen=True)
class LogSummary:
    requests: int
    server_errors: int
    problems: int
    samples: list[str]


@dataclass(frozen=True)
class Report:
    config: Config
    comparisons: list[Comparison]
    memory: PeakMemory
    workers_seen: int
    ingress_log: LogSummary
    postgres: str
    redis: str
    pool: str
    load_average: float

    @property
    def errors(self) -> int:
        return sum(c.bare.errors + c.ingress.errors for c in self.comparisons)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise_log(path: Path, sample_count: int = 5) -> LogSummary:
    """Count access-log lines and 5xx answers; keep the first lines that are not plain access lines."""
    requests = server_errors = problems = 0
    samples: list[str] = []
    with path.open(errors="replace") as log:
        for line in log:
            entry = parse_log_line(line)
            if entry.get("logger") == "deepref.access":
                requests += 1
                server_errors += int(entry.get("status", 0)) >= 500
                continue
            problems += 1
            if len(samples) < sample_count:
                samples.append(line.strip()[:300])
    return LogSummary(requests, server_errors, problems, samples)


def parse_log_line(line: str) -> dict[str, Any]:
    with suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict):
            return entry
    return {}


# --- output -----------------------------------------------------------------------------------


def render(report: Report) -> str:
    lines = [
        "| endpoint | bare rps | ingress rps | ratio | bare p50/p99 ms | ingress p50/p99 ms | errors (bare/ingress) "
        "| server CPU ms/request (bare/ingress) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [table_row(c) for c in report.comparisons]
    lines += ["", *note_lines(report), *failure_lines(report), *memory_lines(report), *target_lines(report)]
    lines += cpu_lines(report)
    lines += config_lines(report)
    return "\n".join(lines)


def table_row(c: Comparison) -> str:
    return (
        f"| {c.endpoint} | {c.bare.rps:.0f} | {c.ingress.rps:.0f} | {c.ratio:.2f} "
        f"| {c.bare.p50_ms:.1f} / {c.bare.p99_ms:.1f} | {c.ingress.p50_ms:.1f} / {c.ingress.p99_ms:.1f} "
        f"| {c.bare.errors} / {c.ingress.errors} | {c.bare.server_cpu_ms:.2f} / {c.ingress.server_cpu_ms:.2f} |"
    )


def note_lines(report: Report) -> list[str]:
    """The scripted scenarios: how many requests were prepared, and how long the window lasted."""
    lines = []
    for c in report.comparisons:
        if not c.note:
            continue
        window = f"{c.ingress.seconds:.1f} s"
        if c.ingress.seconds < report.config.seconds:
            window += (
                f" (of {report.config.seconds:g} s: the prepared requests ran out; "
                "BENCH_REFERENCE_REQUESTS / BENCH_REFEREE_LINKS prepare more)"
            )
        lines.append(f"- {c.endpoint}: {c.note}; measured window {window}, {c.ingress.completed} answers in it")
    return lines


def failure_lines(report: Report) -> list[str]:
    lines = []
    for c in report.comparisons:
        for side, result in (("bare", c.bare), ("ingress", c.ingress)):
            if result.errors or result.stopped_clients:
                lines.append(
                    f"- errors, {side} {c.endpoint}: {result.failures}; clients stopped early: {result.stopped_clients}"
                )
    log = report.ingress_log
    lines.append(
        f"- ingress log: {log.requests} access lines, {log.server_errors} with status >= 500, "
        f"{log.problems} other lines (var/bench/ingress.log)"
    )
    lines += [f"  - {sample}" for sample in log.samples]
    return lines


def memory_lines(report: Report) -> list[str]:
    memory = report.memory
    return [
        f"- peak RSS of one ingress worker: {memory.peak_mb:.1f} MB (VmHWM, largest of {report.workers_seen} "
        f"worker pids seen; {memory.idle_kb / 1024:.1f} MB when idle after start)"
    ]


def target_lines(report: Report) -> list[str]:
    lines = []
    for c in report.comparisons:
        if c.endpoint == TARGET_RATIO_ENDPOINT:
            verdict = "met" if c.ratio >= TARGET_RATIO else "MISSED"
            lines.append(f"- target {c.endpoint} ratio >= {TARGET_RATIO:.2f}: {c.ratio:.2f}, {verdict}")
    at = f"at {report.config.concurrency} connections"
    if report.config.concurrency != TARGET_CONCURRENCY:
        at += f" (the target is stated at {TARGET_CONCURRENCY})"
    slow = [f"{c.endpoint} {c.ingress.p99_ms:.0f} ms" for c in report.comparisons if c.ingress.p99_ms >= TARGET_P99_MS]
    verdict = "met" if not slow else "MISSED: " + ", ".join(slow)
    lines.append(f"- target ingress p99 < {TARGET_P99_MS:.0f} ms {at}: {verdict}")
    return lines


def cpu_lines(report: Report) -> list[str]:
    """CPU used outside the measured server and the load generator: other processes' noise."""
    shares = ", ".join(
        f"{c.endpoint} {c.bare.other_cpu_cores:.2f} / {c.ingress.other_cpu_cores:.2f}" for c in report.comparisons
    )
    lines = [
        "- cores used outside the measured workers and the load generator (bare / ingress run; for the ingress "
        f"this includes PostgreSQL and Redis): {shares}"
    ]
    if any(c.bare.other_cpu_cores > NOISY_CORES for c in report.comparisons):
        lines.append(
            f"- WARNING: other processes used more than {NOISY_CORES} cores during a bare run: its rps and ratio "
            "are unreliable; rerun on a quiet machine (server CPU ms/request is the steadier figure)"
        )
    return lines


def config_lines(report: Report) -> list[str]:
    config = report.config
    gunicorn = gunicorn_settings()
    return [
        f"- config: {config.workers} gunicorn workers ({gunicorn['worker_class']}, worker_connections "
        f"{gunicorn['worker_connections']}, keepalive {gunicorn['keepalive']} s) for both apps; "
        f"{config.concurrency} keep-alive connections from {config.generators} load generator "
        f"process{'es' if config.generators > 1 else ''}; "
        f"{config.warmup:g} s warm-up + {config.seconds:g} s measured per run",
        f"- ingress: DB pool per worker {report.pool}; "
        f"PostgreSQL {report.postgres}, Redis {report.redis}; BCRYPT_ROUNDS={BCRYPT_ROUNDS} for registration; "
        f"rate limits {UNLIMITED_RATE}/min (limiter still hits Redis); access log to var/bench/ingress.log",
        f"- machine: {os.cpu_count()} cores, load average {report.load_average:.2f} before the run "
        "(anything else running on the machine takes CPU from both servers and makes the figures noisy)",
    ]


def gunicorn_settings() -> dict[str, Any]:
    return runpy.run_path(str(GUNICORN_CONF))


def write_results(report: Report, path: Path) -> None:
    data = {
        "config": asdict(report.config),
        "ingress_db_pool": report.pool,
        "postgres": report.postgres,
        "redis": report.redis,
        "bcrypt_rounds": BCRYPT_ROUNDS,
        "results": [{**asdict(c), "ratio": round(c.ratio, 4)} for c in report.comparisons],
        "peak_rss_mb": round(report.memory.peak_mb, 1),
        "idle_rss_mb": round(report.memory.idle_kb / 1024, 1),
        "ingress_log": asdict(report.ingress_log),
        "errors": report.errors,
        "load_average_before": report.load_average,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
