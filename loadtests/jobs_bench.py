"""`make bench`, job search: 100,000 postings, their query plans, search latency and the listing cache.

What is measured
    Seeding: BENCH_JOBS_POSTINGS postings (loadtests/jobs_seed.py) and the time it took.
    Plans: for each query of QUERIES (the plain listing, its second page, and searches with
    a common word, a rare word, two words, a phrase, with and without `location` and
    `remoteType`), EXPLAIN (ANALYZE, BUFFERS) of the statement `domain.jobs.service.browse_jobs`
    sends, captured as it runs (cursor, order and limit included), with a job seeker as the
    viewer. A plan that reads `jobs` with a sequential scan is a failure (exit status 1).
    Load, through gunicorn ingresses (loadtests/servers.py) and the closed-loop load generator,
    with job seekers' tokens: the searches of QUERIES mixed (each client sends the next one) on
    an ingress with the cache off (JOB_LISTING_CACHE_SECONDS=0, so every search is the
    PostgreSQL path), at BENCH_CONCURRENCY connections and again at BENCH_JOBS_LIGHT_CONCURRENCY
    (where latency is the service time rather than the queue in front of saturated cores); the
    plain listing on that ingress; the plain listing on an ingress with the cache on (hits), and
    the ratio of the two throughputs; the search mix again on the cached ingress, where the same
    few searches repeat (hot pages: each is a miss once per generation, then hits). Client-side
    latency is the load generator's. Server-side latency is the access log's `duration_ms` (the
    RequestLifecycle middleware's, from the request's start to its response; gunicorn's accept
    queue is not in it) of the GET /jobs requests that ended inside the measured window.
    Target: server-side p99 < 100 ms for the searches.

Runs alone as `python -m loadtests.jobs_bench` (DATABASE_URL / REDIS_URL, or embedded servers,
as loadtests/bench.py), and at the end of `make bench`. Environment: BENCH_JOBS_POSTINGS
(100000), BENCH_JOBS_SEARCHES (searches prepared for a mixed run, each sent once; 40000),
BENCH_JOBS_LIGHT_CONCURRENCY (2), and bench.py's BENCH_SECONDS, BENCH_WARMUP,
BENCH_CONCURRENCY, BENCH_GENERATORS, WEB_CONCURRENCY, DB_POOL_SIZE. Output: the plans and
markdown tables on stdout; JSON in var/bench/jobs-results.json; the servers' logs in
var/bench/jobs-cached.log and jobs-uncached.log.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

from sqlalchemy import event

from domain.core.db import Database
from domain.jobs import service as jobs
from domain.jobs.models import RemoteType
from domain.users.models import User
from loadtests import servers
from loadtests.bench import GENERATOR_STARTUP, Config, Scenario, run_load
from loadtests.jobs_seed import Seeded, seed
from loadtests.loadgen import ClientSpec, Step
from loadtests.report import Measurement, parse_log_line, percentile
from loadtests.servers import API, HOST, VAR, Server, served

JOBS = f"{API}/jobs"
SEARCHERS = 20
PAGE = 20
TARGET_P99_MS = 100.0
# The second page's cursor is the first page's nextCursor.
QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("listing", {}),
    ("listing, page 2", {"cursor": ""}),
    ("common word", {"q": "engineer"}),
    ("rare word", {"q": "quantum"}),
    ("two words", {"q": "python developer"}),
    ("phrase", {"q": '"data engineer"'}),
    ("word + location", {"q": "developer", "location": "berlin"}),
    ("word + remoteType", {"q": "engineer", "remoteType": "remote"}),
    ("location + remoteType", {"location": "London", "remoteType": "hybrid"}),
    ("word + both filters", {"q": "senior", "location": "Paris", "remoteType": "onsite"}),
)
SEQ_SCAN = re.compile(r"Seq Scan on jobs\b")
INDEX = re.compile(r"(?:Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")
EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")


@dataclass(frozen=True)
class PlanCheck:
    query: str
    params: dict[str, str]
    indexes: list[str]
    seq_scan: bool
    execution_ms: float
    plan: str


@dataclass(frozen=True)
class Run:
    name: str
    client: Measurement
    server_p50_ms: float
    server_p99_ms: float
    server_requests: int


# --- plans ------------------------------------------------------------------------------------


def search_of(params: Mapping[str, str]) -> jobs.JobSearch:
    remote = params.get("remoteType")
    return jobs.JobSearch(params.get("q"), params.get("location"), RemoteType(remote) if remote else None)


def explain_all(database: Database, viewer: User) -> list[PlanCheck]:
    """EXPLAIN (ANALYZE, BUFFERS) of the page query of each of QUERIES, as browse_jobs sends it."""
    with database.session(read_only=True) as session:
        first = jobs.browse_jobs(session, viewer, jobs.JobSearch(), cursor=None, limit=PAGE).page.next_cursor
    checks = []
    for name, given in QUERIES:
        params = {**given, "cursor": first or ""} if "cursor" in given else dict(given)
        checks.append(explain(database, viewer, name, params))
    return checks


def explain(database: Database, viewer: User, name: str, params: dict[str, str]) -> PlanCheck:
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    with database.session(read_only=True) as session:
        connection = session.connection()
        event.listen(connection, "before_cursor_execute", record)
        try:
            jobs.browse_jobs(session, viewer, search_of(params), cursor=params.get("cursor"), limit=PAGE)
        finally:
            event.remove(connection, "before_cursor_execute", record)
        statement, parameters = sent[0]  # the page; the second statement loads its employers
        rows = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).all()
    plan = "\n".join(str(row[0]) for row in rows)
    took = EXECUTION.search(plan)
    indexes = sorted(set(INDEX.findall(plan)))
    return PlanCheck(name, params, indexes, bool(SEQ_SCAN.search(plan)), float(took[1]) if took else 0.0, plan)


# --- load -------------------------------------------------------------------------------------


def measure(server: Server, name: str, specs: list[ClientSpec], config: Config, steps: list[Step]) -> Run:
    """One closed-loop run on `server`; the server-side latency from its access log in the window."""
    print(f"bench: jobs, {name} ...", file=sys.stderr, flush=True)
    offset = server.log.stat().st_size
    begin = time.time() + GENERATOR_STARTUP + config.warmup  # when run_load's window opens
    client = run_load(server, JOBS, Scenario(name, "GET", JOBS, JOBS, "access"), specs, config, steps)
    durations = sorted(server_durations(server.log, offset, begin, begin + client.seconds))
    return Run(name, client, percentile(durations, 0.5), percentile(durations, 0.99), len(durations))


def server_durations(log: Path, offset: int, begin: float, end: float) -> list[float]:
    """`duration_ms` of the GET /jobs access-log lines written after `offset` that ended in [begin, end)."""
    found = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            entry = parse_log_line(line.decode(errors="replace"))
            if entry.get("logger") != "deepref.access" or entry.get("route") != JOBS:
                continue
            if begin <= datetime.fromisoformat(entry["ts"]).timestamp() < end:
                found.append(float(entry["duration_ms"]))
    return found


def second_answer(port: int, token: str) -> str:
    """The X-Cache header of the second of two identical listings ("none" without one)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for _ in range(2):
            connection.request("GET", JOBS, headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            response.read()
        return response.getheader("X-Cache") or "none"
    finally:
        connection.close()


def load_runs(env: Mapping[str, str], config: Config, checks: Sequence[PlanCheck]) -> tuple[list[Run], str]:
    """The search mix and the listing with the cache off, then the listing with it on."""
    searches = [f"{JOBS}?{urlencode(check.params)}" for check in checks if "q" in check.params]
    count = int(os.environ.get("BENCH_JOBS_SEARCHES", "40000"))
    steps = [Step(path=path) for path in itertools.islice(itertools.cycle(searches), count)]
    with served("jobs-uncached", "ingress.app:app", {**env, "JOB_LISTING_CACHE_SECONDS": "0"}, "/readyz") as plain:
        tokens = [a.access_token for a in servers.register_accounts(plain.port, SEARCHERS, prefix="jobs-searcher")]
        specs = [
            ClientSpec(headers={"Authorization": f"Bearer {tokens[n % SEARCHERS]}"}) for n in range(config.concurrency)
        ]
        light = replace(config, concurrency=int(os.environ.get("BENCH_JOBS_LIGHT_CONCURRENCY", "2")))
        mix = "search mix, cache off, {} connections"
        runs = [measure(plain, mix.format(c.concurrency), specs[: c.concurrency], c, steps) for c in (config, light)]
        runs.append(measure(plain, "listing, cache off", specs, config, []))
    with served("jobs-cached", "ingress.app:app", env, "/readyz") as cached:
        answer = second_answer(cached.port, tokens[0])
        runs.append(measure(cached, "listing, cache on", specs, config, []))
        # The same searches again and again: after the first of each, hot pages from Redis.
        runs.append(measure(cached, f"search mix, cache on, {config.concurrency} connections", specs, config, steps))
    return runs, answer


# --- the run and its report -------------------------------------------------------------------


@dataclass(frozen=True)
class JobsReport:
    seeded: Seeded
    plans: list[PlanCheck]
    runs: list[Run]
    cache_answer: str

    @property
    def ratio(self) -> float:
        rps = {run.name: run.client.rps for run in self.runs}
        off = rps.get("listing, cache off", 0.0)
        return rps.get("listing, cache on", 0.0) / off if off else 0.0

    @property
    def failed(self) -> bool:
        return any(plan.seq_scan for plan in self.plans) or any(run.client.errors for run in self.runs)


def run(config: Config, env: Mapping[str, str]) -> JobsReport:
    """Seed, explain and load the job search on its own database (servers as loadtests/bench.py)."""
    postings = int(env.get("BENCH_JOBS_POSTINGS", "100000"))
    with servers.backing_services(env) as (postgres_url, redis_url):
        server_env = servers.ingress_env(env, servers.prepare_database(postgres_url), redis_url, config)
        servers.migrate(server_env)
        print(f"bench: jobs, seeding {postings} postings ...", file=sys.stderr, flush=True)
        seeded = seed(server_env, postings)
        try:
            plans = explain_all(seeded.database, seeded.searcher)
        finally:
            seeded.database.dispose()
        runs, answer = load_runs(server_env, config, plans)
    return JobsReport(seeded, plans, runs, answer)


def render(report: JobsReport) -> str:
    seeded = report.seeded
    lines = [
        f"### Job search: {seeded.postings} postings of {seeded.employers} employers, seeded in {seeded.seconds:.1f} s",
        "",
        "| query | indexes used on jobs | seq scan on jobs | execution ms |",
        "| --- | --- | --- | ---: |",
    ]
    lines += [
        f"| {p.query} `{urlencode(p.params)[:40]}` | {', '.join(p.indexes) or '-'} | {'YES' if p.seq_scan else 'no'} "
        f"| {p.execution_ms:.2f} |"
        for p in report.plans
    ]
    lines += ["", "| run | rps | client p50/p99 ms | server p50/p99 ms | server requests | errors |"]
    lines += ["| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [
        f"| {r.name} | {r.client.rps:.0f} | {r.client.p50_ms:.1f} / {r.client.p99_ms:.1f} "
        f"| {r.server_p50_ms:.1f} / {r.server_p99_ms:.1f} | {r.server_requests} | {r.client.errors} |"
        for r in report.runs
    ]
    searches = [r for r in report.runs if r.name.startswith("search mix")]
    lines += [""]
    lines += [
        f"- target search p99 < {TARGET_P99_MS:.0f} ms server-side, {r.name.removeprefix('search mix, ')}: "
        f"{r.server_p99_ms:.1f} ms, {'met' if r.server_p99_ms < TARGET_P99_MS else 'MISSED'}"
        for r in searches
    ]
    lines += [
        f"- listing throughput, cache on / cache off: {report.ratio:.2f}x "
        f"(second identical listing answered X-Cache: {report.cache_answer})",
        f"- measured windows (s): {[r.client.seconds for r in report.runs]}; "
        f"failures: {[r.client.failures for r in report.runs]}",
    ]
    return "\n".join(lines)


def plans_text(report: JobsReport) -> str:
    return "\n\n".join(f"-- {p.query}: {json.dumps(p.params)}\n{p.plan}" for p in report.plans)


def write_results(report: JobsReport, path: Path) -> None:
    seeded = report.seeded
    data = {
        "seed": {"postings": seeded.postings, "employers": seeded.employers, "seconds": round(seeded.seconds, 1)},
        "plans": [asdict(plan) for plan in report.plans],
        "runs": [asdict(run) for run in report.runs],
        "listing_cache_ratio": round(report.ratio, 2),
        "cache_answer": report.cache_answer,
        "failed": report.failed,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def report_and_status(report: JobsReport) -> int:
    """Print the plans and the tables, write the JSON; 1 when a plan scanned jobs or a request failed."""
    print(plans_text(report))
    print()
    print(render(report))
    write_results(report, VAR / "jobs-results.json")
    print(f"\nbench: job search results in {VAR / 'jobs-results.json'}", file=sys.stderr)
    return 1 if report.failed else 0


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    VAR.mkdir(parents=True, exist_ok=True)
    try:
        report = run(Config.from_env(os.environ), os.environ)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    return report_and_status(report)


if __name__ == "__main__":
    sys.exit(main())
