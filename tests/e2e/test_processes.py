"""The real processes: `deepref run` (gunicorn + gevent) and `deepref create-admin`."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import PASSWORD, TEST_VAR, create_database, worker_id
from tests.e2e.conftest import process_env
from tests.e2e.helpers import DEEPREF, create_admin, port_open, stop, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def system_env(servers, tmp_path):
    database_url = create_database(servers.database_url, f"deepref_e2e_{worker_id()}")
    return process_env(database_url, servers.redis_url, tmp_path, WEB_CONCURRENCY="2")


def test_run_serves_the_api_under_gunicorn_and_stops_cleanly(system_env):
    base = f"http://127.0.0.1:{system_env['INGRESS_PORT']}"
    log = (Path(system_env["DEEPREF_VAR_DIR"]) / "run.log").open("wb")
    process = subprocess.Popen([DEEPREF, "run"], env=system_env, stdout=log, stderr=log)
    try:
        wait_ready(base, process)
        email = f"e2e-{secrets.token_hex(4)}@example.com"
        body = {"email": email, "password": PASSWORD, "role": "employer", "name": "Eve"}
        registered = requests.post(f"{base}/api/v1/auth/register", json=body, timeout=10)
        assert registered.status_code == 201
        tokens = registered.json()
        headers = {"Authorization": f"Bearer {tokens['accessToken']}"}

        # Many requests at once: gevent workers serve them concurrently over the pool.
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.get(f"{base}/api/v1/users/me", headers=headers, timeout=10).status_code,
                    range(60),
                )
            )
        assert statuses == [200] * 60

        refreshed = requests.post(
            f"{base}/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]}, timeout=10
        )
        assert refreshed.status_code == 200
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'route="/api/v1/users/me"' in metrics
        assert_priorities(process.pid)

        admin_env = {**system_env, "DEEPREF_ADMIN_PASSWORD": PASSWORD}
        created = create_admin(f"root-{email}", admin_env)
        assert created.returncode == 0, created.stderr
        login = requests.post(
            f"{base}/api/v1/auth/login", json={"email": f"root-{email}", "password": PASSWORD}, timeout=10
        )
        assert login.json()["user"]["role"] == "admin"
        listing = requests.get(
            f"{base}/api/v1/users",
            params={"role": "employer"},
            headers={"Authorization": f"Bearer {login.json()['accessToken']}"},
            timeout=10,
        )
        assert email in [user["email"] for user in listing.json()["items"]]
        duplicate = create_admin(f"root-{email}", admin_env)
        assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    finally:
        assert stop(process) == 0
        log.close()
    assert not port_open(int(system_env["INGRESS_PORT"]))


def test_run_starts_and_stops_embedded_servers(system_env):
    env = {k: v for k, v in system_env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DEEPREF_VAR_DIR"] = str(TEST_VAR / f"run-{worker_id()}")
    base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
    process = subprocess.Popen([DEEPREF, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url_file = Path(env["DEEPREF_VAR_DIR"]) / "redis" / "url"
    try:
        wait_ready(base, process, timeout=120)
        running_url = url_file.read_text()  # how `make load` finds it
    finally:
        assert stop(process, signal.SIGINT) == 0
    output = process.stdout.read().decode() if process.stdout else ""
    assert "embedded PostgreSQL at" in output and f"embedded Redis at {running_url}" in output
    redis_port = int(output.split("embedded Redis at redis://127.0.0.1:")[1].split("/")[0])
    assert not port_open(redis_port) and not url_file.exists()
    assert not (Path(env["DEEPREF_VAR_DIR"]) / "postgres" / "postmaster.pid").exists()


def test_cli_reports_configuration_errors(tmp_path):
    env = {**os.environ, "DEEPREF_ENV": "production", "DEEPREF_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    env.pop("MASTER_KEY", None)
    result = subprocess.run([DEEPREF, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "production refuses to start" in result.stderr


def assert_priorities(supervisor: int) -> None:
    """What clients wait on runs at normal priority, the rest niced; all in the supervisor's session."""
    children = {pid: cmdline for pid, cmdline in processes().items() if parent_of(pid) == supervisor}
    assert len(children) == 9  # ingress, relay, a worker for each of the 5 queues, beat, Flower
    for pid, cmdline in children.items():
        expected = 0 if "gunicorn" in cmdline else 10
        assert os.getpriority(os.PRIO_PROCESS, pid) == expected, cmdline
        assert os.getsid(pid) == os.getsid(supervisor), cmdline  # one scheduling autogroup
        assert os.getpgid(pid) == pid, cmdline  # Ctrl-C at the terminal reaches the supervisor only


def processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # ended meanwhile
                continue
    return found


def parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])
