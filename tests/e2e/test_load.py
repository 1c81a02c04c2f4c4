"""`make load` against `deepref run`: every scenario runs, the report is written, nothing is lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from domain.core.config import PROJECT_ROOT
from tests.e2e.helpers import DEEPREF, stop, wait_ready

pytestmark = pytest.mark.e2e

# The rows Locust must have sent, each without a failure: every user class and the relay.
ROWS = (
    ("POST", "/api/v1/references"),
    ("GET", "/api/v1/references"),
    ("GET", "/api/v1/referee/[token]"),  # referees found their links in the delivered mail...
    ("POST", "/api/v1/referee/[token]/response"),  # ...and answered
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs?q=[q]"),
    ("SSE", "/events?ticket=[ticket]"),
    ("SSE", "operation ended (202 → event)"),
)


def test_make_load_runs_the_whole_mix_and_checks_that_nothing_was_lost(farm_env):
    env = {**farm_env, "RATE_LIMIT_PER_MINUTE": "1000000", "LOGIN_RATE_LIMIT_PER_MINUTE": "1000000"}
    var_dir = Path(env["DEEPREF_VAR_DIR"])
    log = (var_dir / "run.log").open("wb")
    system = subprocess.Popen([DEEPREF, "run"], env=env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        wait_ready(base, system)
        load = subprocess.run(
            [sys.executable, "-m", "loadtests.load"],
            env={
                **env,
                "HOST": base,
                "RELAY_URL": f"http://127.0.0.1:{env['RELAY_PORT']}",
                "USERS": "10",
                "SPAWN_RATE": "10",
                "DURATION": "30s",
                "LOAD_SAMPLE_SECONDS": "1",
            },
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        assert stop(system) == 0
        log.close()
    assert load.returncode == 0, load.stdout + load.stderr
    report = load.stdout
    for method, name in ROWS:
        row = re.search(rf"^\| {method} \| `{re.escape(name)}` \| (\d+) \| (\d+) \|", report, re.MULTILINE)
        assert row is not None, f"no {method} {name} row in:\n{report}"
        assert int(row.group(1)) > 0 and int(row.group(2)) == 0, row.group(0)
    assert re.search(r"^\| audit \| \d+ \| [\d.]+ \|$", report, re.MULTILINE)  # queue lengths were sampled
    created = re.search(r"^operations created during the run: (\d+) \{\"succeeded\": (\d+)\}$", report, re.MULTILINE)
    assert created is not None and created.group(1) == created.group(2) != "0", report
    assert "operations still open after the drain: 0" in report
    assert {"report.html", "load_stats.csv"} <= {path.name for path in (var_dir / "load").iterdir()}
