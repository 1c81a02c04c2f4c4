"""A user's daily AI budget holds across two `ai` worker processes working at once.

The ingress and two separate `celery worker --queues ai` processes run for real; the model
provider is a local OpenRouter-protocol server that answers after a delay, so the two
workers' calls overlap. Every call costs the same; the budget fits only some of them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from domain.core.config import load_settings
from ingress.cli import process_commands, worker_command
from tests.e2e.helpers import auth_header, get_operation, register_user, wait_for, wait_ready
from tests.fakes import FakeOpenRouter
from tests.fakes.openrouter import FakeUsage

pytestmark = pytest.mark.e2e

BUDGET = 0.01
COST = 0.0008
ANALYSES = 30
ANALYSIS = {
    "skills": ["Python"],
    "seniority": {"level": "mid", "reason": "Three years asked."},
    "clarity": {"score": 70, "notes": "Clear enough."},
    "exclusionaryWording": [],
    "missingSalary": True,
    "summary": "A Python posting.",
}


def test_two_workers_spend_no_more_than_the_budget(farm_env, processes):
    with FakeOpenRouter() as openrouter:
        openrouter.delay = 0.2
        openrouter.answer = lambda body: json.dumps(ANALYSIS)
        openrouter.usage = FakeUsage(prompt_tokens=500, completion_tokens=200, cost=COST)
        env = {
            **farm_env,
            **openrouter.environment(),
            "AI_MODELS": "openai/gpt-4o-mini",
            "AI_DAILY_BUDGET_USD": str(BUDGET),
            "AI_REQUESTS_PER_MINUTE": "1000",
        }
        processes.env = env
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        ingress = processes.start("ingress", process_commands(load_settings(env))["ingress"])
        for name in ("ai-1", "ai-2"):
            command = worker_command(["ai"], ["--pool", "gevent", "--concurrency", "5"])
            command[command.index("--hostname") + 1] = f"{name}@%h"
            processes.start(name, command)
        wait_ready(base, ingress)

        employer = register_user(base, role="employer")
        job = requests.post(
            f"{base}/api/v1/jobs",
            json={"title": "Python developer", "description": "Three years of Python.", "remoteType": "remote"},
            headers=auth_header(employer),
            timeout=10,
        ).json()
        ids = [
            requests.post(f"{base}/api/v1/jobs/{job['id']}/analysis", headers=auth_header(employer), timeout=10).json()[
                "operation"
            ]["id"]
            for _ in range(ANALYSES)
        ]

        def finished() -> list[dict[str, Any]] | None:
            ops = [get_operation(base, employer, op_id) for op_id in ids]
            return ops if all(op["status"] in ("succeeded", "failed") for op in ops) else None

        ops = wait_for(finished, 120, "every analysis to finish")
        calls = len(openrouter.requests)

    succeeded = [op for op in ops if op["status"] == "succeeded"]
    refused = [op for op in ops if op["status"] == "failed"]
    assert {op["error"]["code"] for op in refused} == {"ai_limit_exceeded"}
    assert all(op["error"]["message"].startswith("daily AI budget of $0.01 is used up") for op in refused)
    # Each call reserves ~$0.001 and costs $0.0008: about 12 fit, and the rest are refused unsent.
    assert len(succeeded) >= 10 and refused
    assert calls == len(succeeded)
    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as connection:
        spent = connection.execute(text("SELECT coalesce(sum(cost_usd), 0) FROM ai_usage")).scalar_one()
    engine.dispose()
    assert Decimal(spent) == Decimal(str(COST)) * len(succeeded)
    assert Decimal(spent) <= Decimal(str(BUDGET))
    # Both processes took part.
    logs = [(processes.log_dir / f"{name}.log").read_text() for name in ("ai-1", "ai-2")]
    assert all("tasks.ai.analyse_job" in log and "succeeded" in log for log in logs)
