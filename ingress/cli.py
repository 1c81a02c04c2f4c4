"""The `deepref` command: run the whole system, migrate, create administrators."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from domain.core.config import PROJECT_ROOT, Settings, SettingsError, load_settings
from domain.core.embedded import EmbeddedPostgres, EmbeddedRedis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepref", description="DeepRef backend")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start every process in the foreground (embedded databases when unset)")
    commands.add_parser("migrate", help="apply database migrations")
    admin = commands.add_parser("create-admin", help="create an administrator account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": lambda _: run(),
        "migrate": lambda _: migrate(),
        "create-admin": create_admin,
    }
    try:
        return handlers[args.command](args)
    except SettingsError as exc:
        print(f"deepref: {exc}", file=sys.stderr)
        return 2


def migrate() -> int:
    from domain.core import migrate as migrations

    load_settings().require_database_url()
    migrations.upgrade()
    print("deepref: database is at the latest migration")
    return 0


def create_admin(args: argparse.Namespace) -> int:
    from domain.core.crypto import KeyRing
    from domain.core.db import Database
    from domain.core.encrypted import install_keyring
    from domain.core.errors import DomainError
    from domain.users import service as users

    settings = load_settings()
    install_keyring(KeyRing(settings.master_key))
    password = os.environ.get("DEEPREF_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    database = Database.from_settings(settings)
    try:
        with database.transaction() as session:
            admin = users.create_admin(
                session, users.Accounts.from_settings(settings), email=args.email, password=password, name=args.name
            )
    except DomainError as exc:
        print(f"deepref: {exc.message}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    print(f"deepref: administrator {admin.id} created")
    return 0


def run() -> int:
    """Start embedded services if needed, migrate, then supervise every process until Ctrl-C."""
    var_dir = Path(os.environ.get("DEEPREF_VAR_DIR", PROJECT_ROOT / "var"))
    with ExitStack() as embedded:
        if not os.environ.get("DATABASE_URL"):
            os.environ["DATABASE_URL"] = embedded.enter_context(EmbeddedPostgres(var_dir / "postgres"))
            print(f"deepref: embedded PostgreSQL at {os.environ['DATABASE_URL']}", flush=True)
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = embedded.enter_context(EmbeddedRedis(var_dir / "redis"))
            print(f"deepref: embedded Redis at {os.environ['REDIS_URL']}", flush=True)
        migrate()
        settings = load_settings()
        all_in_one = os.environ.get("DEEPREF_WORKERS", "per-queue") == "all"
        api, relay = f"http://127.0.0.1:{settings.ingress_port}", f"http://127.0.0.1:{settings.relay_port}"
        print(f"deepref: API at {api}/api/v1, docs at {api}/docs, events at {relay}/events", flush=True)
        print(f"deepref: Flower at http://127.0.0.1:{settings.flower_port}", flush=True)
        return supervise(process_commands(settings, all_queues_in_one_worker=all_in_one), var_dir)


# Pools per queue: I/O-bound queues (providers, broker, database) take gevent with many
# greenlets; `audit` stays prefork (an ordered chain), and so does `ai` with the local
# heuristics (CPU work on both cores). With a language model `ai` waits on the network
# (~0.5 s and more per call) and takes gevent. Its concurrency is high because, with acks
# late and prefetch 1 on Redis, a gevent worker takes in at most `concurrency` messages
# per 2 s (its consumer polls every 2 s once every slot has had a message); 100 greenlets
# admit 50 calls/s, about what one process's core can run (`make bench`, loadtests/ai_bench.py).
AI_POOLS = {
    "local": ["--pool", "prefork", "--concurrency", "2"],
    "openrouter": ["--pool", "gevent", "--concurrency", "100"],
}
WORKER_POOLS = {
    "ai": ["--pool", "prefork", "--concurrency", "2"],
    "email": ["--pool", "gevent", "--concurrency", "20"],
    "sms": ["--pool", "gevent", "--concurrency", "20"],
    "audit": ["--pool", "prefork", "--concurrency", "1"],
    "sync": ["--pool", "gevent", "--concurrency", "20"],
}


def process_commands(settings: Settings, *, all_queues_in_one_worker: bool = False) -> dict[str, list[str]]:
    """The processes `run` starts, by name: ingress, relay, workers, beat and Flower."""
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    commands = {
        "ingress": [
            sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "ingress" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{settings.ingress_port}", "ingress.app:app",
        ],
        "relay": [
            sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "realtime" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{settings.relay_port}", "realtime.app:app",
        ],
    }  # fmt: skip
    if all_queues_in_one_worker:
        commands["worker"] = worker_command(list(WORKER_POOLS), ["--pool", "gevent", "--concurrency", "20"])
    else:
        pools = {**WORKER_POOLS, "ai": AI_POOLS[settings.ai_provider]}
        commands |= {f"worker-{queue}": worker_command([queue], pool) for queue, pool in pools.items()}
    commands["beat"] = [*celery, "beat", "--loglevel", "INFO"]
    commands["flower"] = [*celery, "flower", f"--port={settings.flower_port}", "--address=127.0.0.1"]
    return commands


def worker_command(queues: list[str], pool: list[str]) -> list[str]:
    """`celery worker` for `queues`, named after them so Flower shows which is which."""
    name = "-".join(queues) if len(queues) < len(WORKER_POOLS) else "all"
    # No mingle and no gossip: nothing here uses what workers tell each other (revoked ids,
    # elections), and mingling holds each worker's start for a second of waiting for replies.
    return [
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "--queues", ",".join(queues),
        "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip", *pool,
    ]  # fmt: skip


# What clients wait on. The rest (workers, beat, Flower) runs at a lower CPU priority: when
# the host is short of CPU, requests keep their latency and the queues absorb the excess,
# drained once the peak has passed (`make load` shows both: latencies and queue lag).
FOREGROUND = frozenset({"ingress", "relay"})
BACKGROUND_NICENESS = 10


def start(command: list[str], env: dict[str, str], *, background: bool) -> subprocess.Popen[bytes]:
    """Start one child in a process group of its own: Ctrl-C reaches only this supervisor, which
    then stops each child gracefully. Not a session of its own: with the kernel's autogroup
    scheduling each session gets an equal share of the CPU, which would give the ingress's
    gunicorn workers together as much as Flower, and make niceness meaningless."""
    child = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, process_group=0)
    if background:  # before it starts its pool: the pool's processes inherit the niceness
        os.setpriority(os.PRIO_PROCESS, child.pid, BACKGROUND_NICENESS)
    return child


def supervise(commands: dict[str, list[str]], var_dir: Path) -> int:
    """Run the processes until one exits or we are told to stop; then stop them all."""
    metrics_dir = var_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    children = {name: start(cmd, env, background=name not in FOREGROUND) for name, cmd in commands.items()}
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exited: str | None = None
    while not stopping and exited is None:
        exited = next((name for name, child in children.items() if child.poll() is not None), None)
        time.sleep(0.2)
    if exited:
        print(f"deepref: {exited} exited with {children[exited].returncode}; stopping", file=sys.stderr)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if exited is None else 1
