"""`make floor` against a running ingress: both rows measured, the numbers add up, the files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain.core.config import PROJECT_ROOT, load_settings
from ingress.cli import process_commands
from tests.e2e.helpers import Processes, wait_ready

pytestmark = pytest.mark.e2e

USERS = 10


def test_make_floor_measures_the_bare_app_and_the_cheapest_ingress_request(
    farm_env: dict[str, str], processes: Processes
) -> None:
    env = {**farm_env, "LOGIN_RATE_LIMIT_PER_MINUTE": "100000"}
    processes.env = env
    base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
    wait_ready(base, processes.start("ingress", process_commands(load_settings(env))["ingress"]))
    out = Path(env["DEEPREF_VAR_DIR"]) / "load"
    floor = subprocess.run(
        [sys.executable, "-m", "loadtests.floor"],
        env={
            **env,
            "HOST": base,
            "USERS": str(USERS),
            "SPAWN_RATE": str(USERS),
            "FLOOR_SETTLE": "1",
            "FLOOR_SECONDS": "4",
            "LOAD_DIR": str(out),
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert floor.returncode == 0, floor.stdout + floor.stderr
    assert "| bare | `/hello` |" in floor.stdout
    assert "| ingress | `/api/v1/users/me` |" in floor.stdout
    rows = {row["target"]: row for row in json.loads((out / "floor" / "floor.json").read_text())["rows"]}
    assert set(rows) == {"bare", "ingress"}
    for row in rows.values():
        assert row["failures"] == 0
        # Ten users thinking 1-3 s between requests send about five a second.
        assert 2 <= row["requests_per_second"] <= 10, row
        assert row["locust_ms"] > 0 and row["server_ms"] > 0, row
        assert 0 < row["busy_cores"] <= (os.cpu_count() or 1), row
    # Against the ingress, each user signed up first (its GETs then carried its token: no 401 failed them).
    stats = (out / "floor" / "ingress_stats.csv").read_text()
    assert "POST,register," in stats
