"""`make floor`: what `make load`'s users cost this machine before DeepRef does any work for them.

What is measured
    The same Locust as `make load` (one process, FastHttpUser, think time `between(1, 3)` s, USERS
    users started SPAWN_RATE per second), with users that each send one GET over and over
    (loadtests/floor_locustfile.py), in two runs:
      bare     GET /hello of `loadtests.bare_app`, served like the ingress (ingress/gunicorn.conf.py:
               the same gevent worker class, worker count and keep-alive), started by this script;
      ingress  GET /api/v1/users/me of the running ingress at HOST: the cheapest authenticated
               request there is (bearer token, rate limit and the caller's cached row in one Redis
               round trip, no SQL). Each user registers first (`register`, not in the figures).
    Once every user runs and FLOOR_SETTLE seconds more have passed, a FLOOR_SECONDS window: the
    requests answered in it (Locust's history) and the CPU time spent in it by Locust, by the
    server's gunicorn workers and by the rest of the machine (PostgreSQL, Redis, idle Celery
    workers, …: /proc/stat's busy time minus the other two), each per request, and how many of the
    cores the machine was busy. Latency (p50/p95/p99) and failures are Locust's for the whole run.

    The bare row is the floor: the CPU any Python service takes per request of these users on this
    machine. The ingress row adds the least any DeepRef request does. Set against the machine's
    cores, they bound how many users of `make load`'s mix the machine can serve at all.

Environment: HOST (http://127.0.0.1:8000), USERS (1500), SPAWN_RATE (50), FLOOR_SETTLE (10),
FLOOR_SECONDS (60), FLOOR_TARGETS (bare,ingress), WEB_CONCURRENCY (the bare app's workers, as
gunicorn.conf.py), LOAD_DIR (var/load; the files go to its floor/).

Output: the table on stdout; var/load/floor/: each run's Locust CSVs and log, the bare app's log,
and floor.json. The exit status is 1 when a request failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domain.core.config import PROJECT_ROOT
from loadtests.bare_app import HELLO_PATH
from loadtests.load import endpoint_rows, ingress_worker_pids
from loadtests.servers import Server, cpu_seconds, machine_busy_seconds, served

LOCUSTFILE = Path(__file__).with_name("floor_locustfile.py")
INGRESS_PATH = "/api/v1/users/me"


@dataclass(frozen=True)
class Config:
    host: str
    users: int
    spawn_rate: float
    settle: float
    window: float
    targets: tuple[str, ...]
    out_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            host=env.get("HOST", "http://127.0.0.1:8000").rstrip("/"),
            users=int(env.get("USERS", "1500")),
            spawn_rate=float(env.get("SPAWN_RATE", "50")),
            settle=float(env.get("FLOOR_SETTLE", "10")),
            window=float(env.get("FLOOR_SECONDS", "60")),
            targets=tuple(t.strip() for t in env.get("FLOOR_TARGETS", "bare,ingress").split(",") if t.strip()),
            out_dir=Path(env.get("LOAD_DIR", PROJECT_ROOT / "var" / "load")) / "floor",
        )

    @property
    def window_starts(self) -> float:
        """Seconds after Locust starts: every user is running, and a little more."""
        return self.users / self.spawn_rate + self.settle


@dataclass(frozen=True)
class Row:
    target: str
    path: str
    requests_per_second: float
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    locust_ms: float
    server_ms: float
    rest_ms: float
    busy_cores: float


@dataclass(frozen=True)
class Window:
    """What the window took: requests answered and CPU seconds."""

    requests: int
    locust: float
    server: float
    busy: float


def cpu_now(locust_pid: int, server_pids: Sequence[int]) -> tuple[float, float, float]:
    """CPU seconds so far of Locust, of the server's workers and of the whole machine."""
    return cpu_seconds([locust_pid]), cpu_seconds(server_pids), machine_busy_seconds()


def run_target(config: Config, target: str) -> Row:
    """One Locust run against `target` ('bare' or 'ingress'), measured over the window."""
    server: AbstractContextManager[Server | None]
    if target == "bare":
        env = {**os.environ, "LOG_LEVEL": "warning"}
        server = served("floor-bare", "loadtests.bare_app:app", env, HELLO_PATH, config.out_dir)
    elif target == "ingress":
        server = nullcontext()
    else:
        raise SystemExit(f"floor: unknown target {target!r} (bare or ingress)")
    with server as bare:
        if bare is not None:
            host, path, pids = f"http://127.0.0.1:{bare.port}", HELLO_PATH, bare.worker_pids
        else:
            host, path, pids = config.host, INGRESS_PATH, ingress_worker_pids
        window = measure(config, target, host, path, pids)
    return row_of(config, target, path, window)


def measure(config: Config, target: str, host: str, path: str, pids: Callable[[], Sequence[int]]) -> Window:
    prefix = config.out_dir / target
    run_time = config.window_starts + config.window + 2
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--users", str(config.users), "--spawn-rate", str(config.spawn_rate), "--run-time", f"{run_time:.0f}s",
        "--stop-timeout", "5", "--csv", str(prefix), "--logfile", f"{prefix}.log", "--loglevel", "WARNING",
        "--only-summary",
    ]  # fmt: skip
    users = f"{config.users} users (+{config.spawn_rate:g}/s)"
    print(f"floor: {target}: {users} on GET {path} for {run_time:.0f} s", flush=True)
    with open(f"{prefix}.out", "wb") as output:
        locust = subprocess.Popen(
            command, env={**os.environ, "FLOOR_PATH": path}, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT
        )
        started = time.monotonic()
        time.sleep(config.window_starts)
        first, first_at = cpu_now(locust.pid, pids()), time.monotonic() - started
        time.sleep(config.window)
        last, last_at = cpu_now(locust.pid, pids()), time.monotonic() - started
        locust.wait()
    answered = requests_between(Path(f"{prefix}_stats_history.csv"), first_at, last_at)
    return Window(answered, last[0] - first[0], last[1] - first[1], last[2] - first[2])


def requests_between(history_csv: Path, start: float, end: float) -> int:
    """Requests Locust counted between `start` and `end` seconds after its first history line."""
    rows = [row for row in endpoint_rows(history_csv) if row["Name"] == "Aggregated"]
    if not rows:
        return 0
    origin = int(rows[0]["Timestamp"])

    def count_at(second: float) -> int:
        nearest = min(rows, key=lambda row: abs(int(row["Timestamp"]) - origin - second))
        return int(nearest["Total Request Count"])

    return count_at(end) - count_at(start)


def row_of(config: Config, target: str, path: str, window: Window) -> Row:
    stats = stats_row(config.out_dir / f"{target}_stats.csv", path)
    per_request = 1000 / max(window.requests, 1)
    return Row(
        target=target,
        path=path,
        requests_per_second=window.requests / config.window,
        failures=int(stats.get("Failure Count", "0") or 0),
        p50_ms=float(stats.get("50%", "0") or 0),
        p95_ms=float(stats.get("95%", "0") or 0),
        p99_ms=float(stats.get("99%", "0") or 0),
        locust_ms=window.locust * per_request,
        server_ms=window.server * per_request,
        rest_ms=max(window.busy - window.locust - window.server, 0.0) * per_request,
        busy_cores=window.busy / config.window,
    )


def stats_row(stats_csv: Path, path: str) -> dict[str, str]:
    """Locust's whole-run figures of the GET to `path` (empty when it sent none)."""
    return next((row for row in endpoint_rows(stats_csv) if row["Name"] == path), {})


def render(rows: Sequence[Row], config: Config) -> str:
    lines = [
        f"{config.users} users, think time 1-3 s; CPU over a {config.window:g} s window once all run "
        f"(this machine: {os.cpu_count()} cores)",
        "",
        "| target | GET | req/s | failures | p50 ms | p95 ms | p99 ms | Locust CPU ms/req | server CPU ms/req "
        "| rest of machine ms/req | machine busy (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.target} | `{row.path}` | {row.requests_per_second:.0f} | {row.failures} | {row.p50_ms:g} "
            f"| {row.p95_ms:g} | {row.p99_ms:g} | {row.locust_ms:.2f} | {row.server_ms:.2f} | {row.rest_ms:.2f} "
            f"| {row.busy_cores:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    config = Config.from_env(os.environ)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_target(config, target) for target in config.targets]
    print(render(rows, config))
    results: dict[str, Any] = {"config": {**asdict(config), "out_dir": str(config.out_dir)}}
    results["rows"] = [asdict(row) for row in rows]
    (config.out_dir / "floor.json").write_text(json.dumps(results, indent=2))
    print(f"floor: results in {config.out_dir / 'floor.json'}")
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
