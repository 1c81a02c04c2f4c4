"""`make bench`: throughput and latency of the ingress beside a bare Falcon app, on this machine.

What is measured
    For GET /healthz, GET /api/v1/users/me (a bearer access token per client),
    POST /api/v1/auth/refresh (each client rotating its own refresh token) and
    POST /api/v1/operations/probe (operations accepted; an administrator's token), POST
    /api/v1/references (candidates asking for references) and POST /api/v1/referee/{token}/response
    (referees answering, one submission per link), the requests/s and the p50/p99 latency of the
    real ingress, each beside the same traffic against `loadtests.bare_app` (GET /hello, POST
    /echo with the same headers and body). Both apps are served the same way in the same run:
    gunicorn with ingress/gunicorn.conf.py, so the same gevent worker class, worker count and
    keep-alive. The key figure is the ratio
    ingress rps / bare rps: the share of the framework's own throughput the ingress keeps once
    its middleware, access log, PostgreSQL and Redis work are added. Targets: GET /users/me
    keeps >= 30 % of bare throughput; p99 < 100 ms at 100 concurrent connections.
    Also the peak RSS of one ingress worker under that load: the largest VmHWM in
    /proc/<pid>/status among the gunicorn master's children, read after each ingress run; and
    the workers' CPU time per request (utime + stime from /proc/<pid>/stat over the run,
    warm-up included, divided by the requests answered), which, unlike requests/s, hardly
    depends on how much of the two cores the load generator takes. As a noise indicator, the
    cores used during each run by everything but the workers and the load generator (from
    /proc/stat); during a bare run that is other processes only, and a warning is printed when
    they took enough CPU to make the bare figures, and so the ratios, unreliable.

How
    The load comes from `loadtests.loadgen` processes on this machine (gevent +
    geventhttpclient, closed loop): BENCH_CONCURRENCY keep-alive connections split between
    BENCH_GENERATORS processes, all sending to 127.0.0.1. Each run has BENCH_WARMUP seconds of
    unmeasured warm-up, then BENCH_SECONDS measured; each endpoint runs against the bare app,
    then against the ingress. One account per connection is registered before the load, with
    BCRYPT_ROUNDS=4 (registration is not measured). The rate limits are raised so far that the
    limiter still makes its Redis round trip on every request but never refuses one.
    The two reference scenarios send requests that can be made only once (a candidate may have
    ten requests awaiting an answer; a link is answered once), so they are prepared before the
    load and the clients share them, each sent once (loadtests/reference_bench.py): the window
    ends early if they run out, and the count prepared is printed.
    PostgreSQL and Redis are DATABASE_URL / REDIS_URL when set (the database `deepref_bench` is
    dropped and created again on that server; in Redis, the limiter's keys expire within a
    minute, the bench's queues are emptied before the farm runs); when unset, embedded servers
    under var/bench are started and stopped again.

    Then the worker farm: accept-to-event latency through ingress, broker, one worker and the
    relay (loadtests/pipeline_bench.py), a referee's answer to its verification event over SSE
    (loadtests/reference_pipeline.py; its links are prepared and opened before the throughput
    runs, so that they are answered as late as a referee would), and the relay holding 5,000 streams
    (loadtests/relay_bench.py; BENCH_RELAY=0 skips it).

    Then job search (loadtests/jobs_bench.py; BENCH_JOBS=0 skips it), on its own database and
    ingresses: 100,000 postings seeded, EXPLAIN (ANALYZE, BUFFERS) of each search's query (a
    sequential scan of `jobs` fails the run), searches' server-side and client-side p50/p99, and
    the listing's throughput with the Redis page cache against without it.

    Last, AI operations per second through one `ai` worker (loadtests/ai_bench.py; BENCH_AI=0
    skips it): job analyses with the local heuristics and with a local OpenRouter-protocol
    server answering after 0.5 s, each on its production pool and on the other pool.

Output
    A markdown table, the peak RSS and the configuration on stdout; the same as JSON in
    var/bench/results.json (the farm's figures in var/bench/farm-results.json); the servers'
    logs in var/bench/*.log; the job search's in var/bench/jobs-results.json. The exit status is 1
    when any request failed, a probe's event never came or a job search plan scanned `jobs`
    sequentially, since such a run's figures are not valid.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CONCURRENCY (100), BENCH_GENERATORS
(see DEFAULT_GENERATORS), WEB_CONCURRENCY (2), DB_POOL_SIZE (the settings' default),
BENCH_REFERENCE_REQUESTS (3000), BENCH_REFEREE_LINKS (3000), BENCH_PROBES (200),
BENCH_REFERENCE_SAMPLES (200), BENCH_RELAY (1), BENCH_JOBS (1), BENCH_JOBS_POSTINGS (100000),
BENCH_JOBS_SEARCHES (40000), BENCH_JOBS_LIGHT_CONCURRENCY (2), BENCH_AI (1; the AI throughput of
loadtests/ai_bench.py, whose own variables are in its docstring).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal, NoReturn

from domain.core.config import PROJECT_ROOT, Settings
from loadtests import pipeline_bench, reference_bench, reference_pipeline, relay_bench
from loadtests.bare_app import ECHO_PATH, HELLO_PATH
from loadtests.loadgen import ClientSpec, Outcome, Plan, Step
from loadtests.report import Comparison, Measurement, PeakMemory, Report, render, summarise_log, write_results
from loadtests.servers import (
    API,
    VAR,
    Account,
    CpuSample,
    Server,
    backing_services,
    bare_env,
    describe_pool,
    ingress_env,
    migrate,
    prepare_database,
    register_accounts,
    served,
)

# One generator process measured best against the bare app on a 2-core machine (two: ~20 % fewer rps).
DEFAULT_GENERATORS = 1

# Seconds.
GENERATOR_STARTUP = 1.5  # for generator processes to import and build their clients before start_at
GENERATOR_GRACE = 30.0  # past the end of the window, before a generator is killed

# "script": the clients' requests are prepared by loadtests/reference_bench.py, each sent once.
Credentials = Literal["none", "access", "refresh", "admin", "script"]


@dataclass(frozen=True)
class Config:
    seconds: float
    warmup: float
    concurrency: int
    generators: int
    workers: int
    db_pool_size: int
    reference_requests: int
    referee_links: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        concurrency = int(env.get("BENCH_CONCURRENCY", "100"))
        return cls(
            seconds=float(env.get("BENCH_SECONDS", "10")),
            warmup=float(env.get("BENCH_WARMUP", "2")),
            concurrency=concurrency,
            generators=max(1, min(concurrency, int(env.get("BENCH_GENERATORS", str(DEFAULT_GENERATORS))))),
            workers=int(env.get("WEB_CONCURRENCY", "2")),
            db_pool_size=int(env.get("DB_POOL_SIZE", str(Settings.model_fields["db_pool_size"].default))),
            reference_requests=int(env.get("BENCH_REFERENCE_REQUESTS", "3000")),
            referee_links=int(env.get("BENCH_REFEREE_LINKS", "3000")),
        )


@dataclass(frozen=True)
class Scenario:
    endpoint: str
    method: Literal["GET", "POST"]
    bare_path: str
    ingress_path: str
    credentials: Credentials


SCENARIOS = (
    Scenario("GET /healthz", "GET", HELLO_PATH, "/healthz", "none"),
    Scenario(f"GET {API}/users/me", "GET", HELLO_PATH, f"{API}/users/me", "access"),
    Scenario(f"POST {API}/auth/refresh", "POST", ECHO_PATH, f"{API}/auth/refresh", "refresh"),
    # Operations accepted: row + outbox row, commit, publish to the broker, mark published.
    Scenario(f"POST {API}/operations/probe", "POST", HELLO_PATH, f"{API}/operations/probe", "admin"),
)
# Reference requested: lock the candidate, count their open requests, encrypt, reference + link +
# operation + outbox + notification rows, commit, publish to the email and audit queues.
REFERENCE_REQUEST = Scenario(f"POST {API}/references", "POST", ECHO_PATH, f"{API}/references", "script")
# Referee answer: find the link by its hash, lock, check every answer, seal them, verification
# operation + outbox rows, commit, publish to the ai and audit queues.
REFEREE_RESPONSE = Scenario(
    f"POST {API}/referee/{{token}}/response", "POST", ECHO_PATH, f"{API}/referee/{{token}}/response", "script"
)


# --- load -------------------------------------------------------------------------------------


def client_specs(credentials: Credentials, accounts: Sequence[Account], admin_token: str = "") -> list[ClientSpec]:
    if credentials == "admin":
        return [ClientSpec(headers={"Authorization": f"Bearer {admin_token}"}) for _ in accounts]
    if credentials == "access":
        return [ClientSpec(headers={"Authorization": f"Bearer {a.access_token}"}) for a in accounts]
    if credentials == "refresh":
        json_headers = {"Content-Type": "application/json"}
        return [ClientSpec(headers=json_headers, body=json.dumps({"refreshToken": a.refresh_token})) for a in accounts]
    return [ClientSpec() for _ in accounts]


def run_load(
    server: Server,
    path: str,
    scenario: Scenario,
    specs: Sequence[ClientSpec],
    config: Config,
    steps: Sequence[Step] = (),
) -> Measurement:
    """Run one measured load in `config.generators` processes sharing `specs` (and `steps`); merge their outcomes."""
    start_at = time.time() + GENERATOR_STARTUP
    plans = [
        Plan(
            port=server.port,
            method=scenario.method,
            path=path,
            chain_refresh=scenario.credentials == "refresh",
            clients=list(specs[index :: config.generators]),
            steps=list(steps[index :: config.generators]),
            start_at=start_at,
            warmup=config.warmup,
            duration=config.seconds,
        )
        for index in range(config.generators)
    ]
    deadline = start_at + config.warmup + config.seconds + GENERATOR_GRACE
    workers = server.worker_pids()
    before = CpuSample.take(workers)
    with ExitStack() as stack:
        processes = [stack.enter_context(generator(plan, index)) for index, plan in enumerate(plans)]
        outcomes = [collect(process, deadline) for process in processes]
    return Measurement.of(outcomes, plans[0].window, before, CpuSample.take(workers))


@contextmanager
def generator(plan: Plan, index: int) -> Iterator[subprocess.Popen[bytes]]:
    plan_file = VAR / f"plan-{index}.json"
    plan_file.write_text(plan.model_dump_json())
    command = [sys.executable, "-m", "loadtests.loadgen", str(plan_file)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        plan_file.unlink(missing_ok=True)


def collect(process: subprocess.Popen[bytes], deadline: float) -> Outcome:
    stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.time()))
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    return Outcome.model_validate_json(stdout)


def compare(
    scenario: Scenario,
    bare: Server,
    ingress: Server,
    specs: Sequence[ClientSpec],
    config: Config,
    memory: PeakMemory,
    steps: Sequence[Step] = (),
    note: str = "",
) -> Comparison:
    """The scenario against both apps; with `steps`, the bare app gets client i repeating step i."""
    print(f"bench: {scenario.endpoint} ...", file=sys.stderr, flush=True)
    bare_result = run_load(bare, scenario.bare_path, scenario, repeated(specs, steps), config)
    ingress_result = run_load(ingress, scenario.ingress_path, scenario, specs, config, steps)
    memory.observe(ingress.worker_pids())
    return Comparison(scenario.endpoint, bare_result, ingress_result, note)


def repeated(specs: Sequence[ClientSpec], steps: Sequence[Step]) -> list[ClientSpec]:
    """The clients as they are, or with step i's headers and body as client i's fixed request."""
    if not steps:
        return list(specs)
    return [
        ClientSpec(headers={**spec.headers, **step.headers}, body=step.body)
        for spec, step in zip(specs, itertools.cycle(steps), strict=False)
    ]


def reference_comparisons(
    bare: Server,
    ingress: Server,
    accounts: Sequence[Account],
    env: Mapping[str, str],
    config: Config,
    memory: PeakMemory,
) -> list[Comparison]:
    """Candidates asking for references, then referees answering the links those requests sent."""
    script = reference_bench.request_script(ingress.port, accounts, config.reference_requests)
    candidates = len(script.steps) // reference_bench.REQUESTS_PER_CANDIDATE
    note = f"{len(script.steps)} requests prepared, each sent once ({candidates} candidates, 10 each)"
    requested = compare(REFERENCE_REQUEST, bare, ingress, script.clients, config, memory, script.steps, note)
    print("bench: preparing referee links ...", file=sys.stderr, flush=True)
    links = reference_bench.prepare_links(env, ingress.port, config.referee_links)
    script = reference_bench.referee_script(links, len(accounts))
    note = f"{len(links)} links prepared and opened once, each answered once"
    answered = compare(REFEREE_RESPONSE, bare, ingress, script.clients, config, memory, script.steps, note)
    return [requested, answered]


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Farm:
    """The worker farm's latencies, measured after the throughput runs."""

    pipeline: pipeline_bench.PipelineResult
    references: reference_pipeline.SubmissionResult


def run(config: Config, env: Mapping[str, str]) -> tuple[Report, Farm]:
    load_average = os.getloadavg()[0]
    with backing_services(env) as (postgres_url, redis_url):
        server_env = ingress_env(env, prepare_database(postgres_url), redis_url, config)
        pool = describe_pool(server_env)
        migrate(server_env)
        with (
            served("bare", "loadtests.bare_app:app", bare_env(env, config), HELLO_PATH) as bare,
            served("ingress", "ingress.app:app", server_env, "/readyz") as ingress,
        ):
            memory = PeakMemory()
            memory.observe(ingress.worker_pids())
            memory.idle_kb = max(memory.peaks_kb.values(), default=0)
            accounts = register_accounts(ingress.port, config.concurrency)
            admin_token = pipeline_bench.create_admin(server_env, ingress.port)
            # Opened now, the links have been open as long as a referee takes by the time they are answered.
            print("bench: preparing the referee links of the farm run ...", file=sys.stderr, flush=True)
            farm_links = reference_pipeline.prepare(server_env, ingress.port)
            comparisons = [
                compare(s, bare, ingress, client_specs(s.credentials, accounts, admin_token), config, memory)
                for s in SCENARIOS
            ]
            comparisons += reference_comparisons(bare, ingress, accounts, server_env, config, memory)
            print("bench: accept-to-event latency ...", file=sys.stderr, flush=True)
            pipeline = pipeline_bench.measure(server_env, ingress.port, admin_token)
            print("bench: referee answer to verification event ...", file=sys.stderr, flush=True)
            references = reference_pipeline.measure(server_env, ingress.port, farm_links)
    report = Report(
        config=config,
        comparisons=comparisons,
        memory=memory,
        workers_seen=len(memory.peaks_kb),
        ingress_log=summarise_log(ingress.log),
        postgres="DATABASE_URL" if env.get("DATABASE_URL") else "embedded",
        redis="REDIS_URL" if env.get("REDIS_URL") else "embedded",
        pool=pool,
        load_average=load_average,
    )
    return report, Farm(pipeline, references)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def job_search(config: Config) -> int:
    """Run loadtests/jobs_bench.py and print its results; its exit status (0 when BENCH_JOBS=0 skips it)."""
    if os.environ.get("BENCH_JOBS", "1") == "0":
        return 0
    from loadtests import jobs_bench  # here, not at the top: jobs_bench imports this module

    return jobs_bench.report_and_status(jobs_bench.run(config, os.environ))


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    VAR.mkdir(parents=True, exist_ok=True)
    config = Config.from_env(os.environ)
    try:
        report, farm = run(config, os.environ)
        relay = relay_bench.run() if os.environ.get("BENCH_RELAY", "1") != "0" else None
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    print(render(report))
    print(pipeline_bench.render(farm.pipeline))
    print(reference_pipeline.render(farm.references))
    write_results(report, VAR / "results.json")
    extra = {
        "pipeline": pipeline_bench.as_json(farm.pipeline),
        "referenceSubmission": reference_pipeline.as_json(farm.references),
        "relay": relay,
    }
    (VAR / "farm-results.json").write_text(json.dumps(extra, indent=2, default=str))
    print(f"\nbench: results in {VAR / 'results.json'}", file=sys.stderr)
    failed = bool(report.errors or farm.pipeline.lost or farm.references.lost)
    try:
        jobs_failed = job_search(config)
        ai_failed = ai_throughput()
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    return 1 if failed or jobs_failed or ai_failed else 0


def ai_throughput() -> bool:
    """Run loadtests/ai_bench.py (it prints its table); True when its run is invalid. BENCH_AI=0 skips it."""
    if os.environ.get("BENCH_AI", "1") == "0":
        return False
    from loadtests import ai_bench

    return not ai_bench.run()["ok"]


if __name__ == "__main__":
    sys.exit(main())
