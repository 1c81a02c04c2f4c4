"""The worker farm with real processes: gunicorn, celery workers and beat, the relay.

Email goes to a real SMTP server and SMS to a local Twilio-style API, both started here.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from domain.core.config import load_settings
from domain.core.embedded import EmbeddedRedis
from ingress.cli import WORKER_POOLS, process_commands, worker_command
from tests.conftest import PASSWORD
from tests.e2e.helpers import (
    DEEPREF,
    EventStream,
    auth_header,
    create_admin,
    get_operation,
    port_open,
    register_user,
    stop,
    wait_for,
    wait_ready,
)
from tests.fakes import FakeTwilio, SmtpSink, mail_outbox

pytestmark = pytest.mark.e2e
CODE = re.compile(r"\b(\d{6})\b")


def test_email_verification_through_every_process_and_a_dead_operation_alerts_the_admins(farm_env):
    with SmtpSink() as smtp, FakeTwilio() as twilio:
        twilio.fail_next(500, times=1000)
        env = {**farm_env, **smtp.environment(), **twilio.environment(), "TASK_MAX_ATTEMPTS": "2"}
        subprocess.run([DEEPREF, "migrate"], env=env, check=True, capture_output=True, timeout=60)
        admin_email = f"root-{secrets.token_hex(4)}@example.com"
        assert create_admin(admin_email, env).returncode == 0
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        relay = f"http://127.0.0.1:{env['RELAY_PORT']}"
        log = (Path(env["DEEPREF_VAR_DIR"]) / "run.log").open("wb")
        system = subprocess.Popen([DEEPREF, "run"], env=env, stdout=log, stderr=log)
        try:
            wait_ready(base, system, timeout=120)
            user = register_user(base)
            ticket = requests.post(f"{base}/api/v1/events/tickets", headers=auth_header(user), timeout=10).json()[
                "ticket"
            ]
            stream = EventStream(f"{relay}/events?ticket={ticket}")
            accepted = requests.post(
                f"{base}/api/v1/users/me/email-verification",
                headers=auth_header(user) | {"X-Request-Id": "farm-request-1"},
                timeout=10,
            )
            assert accepted.status_code == 202
            operation_id = accepted.json()["operation"]["id"]

            wait_for(lambda: stream.find(operation_id, "succeeded"), 60, "the succeeded event over SSE")
            [mail] = smtp.wait_for(1, timeout=10)
            assert mail.rcpt_tos == [user["email"]]
            code = CODE.search(mail.text or "").group(1)
            confirmed = requests.post(
                f"{base}/api/v1/users/me/email-verification/confirm",
                json={"code": code},
                headers=auth_header(user),
                timeout=10,
            )
            assert confirmed.status_code == 200 and confirmed.json()["emailVerified"] is True

            requests.patch(
                f"{base}/api/v1/users/me", json={"phone": "+14155550100"}, headers=auth_header(user), timeout=10
            )
            doomed = requests.post(f"{base}/api/v1/users/me/phone-verification", headers=auth_header(user), timeout=10)
            doomed_id = doomed.json()["operation"]["id"]
            wait_for(lambda: stream.find(doomed_id, "dead"), 60, "the dead event over SSE")
            assert get_operation(base, user, doomed_id)["attempts"] == 2
            alert = smtp.wait_for(2, timeout=30)[1]
            assert doomed_id in alert.subject
            assert alert.rcpt_tos == [admin_email]
            assert len(twilio.requests) == 2
            stream.close()

            # The confirmation reached the audit trail through the `audit` worker.
            login = requests.post(
                f"{base}/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD}, timeout=10
            )
            admin_auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}

            def audited() -> dict[str, Any] | None:
                report = requests.get(f"{base}/api/v1/audit/verify", headers=admin_auth, timeout=10).json()
                return report if report["entries"] >= 1 else None

            assert wait_for(audited, 30, "the audit entry")["valid"] is True
            entries = requests.get(f"{base}/api/v1/audit/entries", headers=admin_auth, timeout=10).json()["items"]
            assert [e["action"] for e in entries] == ["user.email_verified"]

            # Task counts per queue and outcome, aggregated by the ingress's /metrics.
            metrics = requests.get(f"{base}/metrics", timeout=10).text
            assert (
                'deepref_tasks_total{queue="email",state="succeeded",task="tasks.email.deliver_notification"}'
                in metrics
            )
            assert 'deepref_tasks_total{queue="sms",state="dead",task="tasks.sms.deliver_notification"}' in metrics
            flower = requests.get(f"http://127.0.0.1:{env['FLOWER_PORT']}/healthcheck", timeout=10)
            assert flower.status_code == 200
        finally:
            assert stop(system) == 0
            log.close()
    for port in ("INGRESS_PORT", "RELAY_PORT", "FLOWER_PORT"):
        assert not port_open(int(env[port])), f"{port} still open after the stop"
    # The request id follows the request into the worker that sent its email.
    worker_lines = [
        json.loads(line)
        for line in (Path(env["DEEPREF_VAR_DIR"]) / "run.log").read_text().splitlines()
        if line.startswith("{") and "farm-request-1" in line
    ]
    assert any(entry["logger"].startswith("domain.notifications") for entry in worker_lines)


def test_a_worker_killed_mid_task_leaves_the_operation_to_be_completed_once(farm_env, processes):
    with SmtpSink() as smtp:
        smtp.rcpt_delay = 3.0  # the task is busy talking to the mail server when it is killed
        env = {**farm_env, **smtp.environment(), "CELERY_VISIBILITY_TIMEOUT": "5", "TASK_TIME_LIMIT": "4"}
        processes.env = env
        commands = process_commands(load_settings(env))
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        ingress = processes.start("ingress", commands["ingress"])
        processes.start("doomed-worker", worker_command(["email"], ["--pool", "prefork", "--concurrency", "1"]))
        wait_ready(base, ingress)
        user = register_user(base)
        operation_id = requests.post(
            f"{base}/api/v1/users/me/email-verification", headers=auth_header(user), timeout=10
        ).json()["operation"]["id"]
        wait_for(lambda: get_operation(base, user, operation_id)["status"] == "running", 60, "the task to start")
        processes.kill("doomed-worker")
        smtp.rcpt_delay = 0.0
        # The replacement is a gevent worker, which never sweeps for a dead worker's messages
        # itself: beat's restore task and the reaper must get the task back.
        processes.start("worker", worker_command(["email"], WORKER_POOLS["email"]))
        processes.start("sync-worker", worker_command(["sync"], WORKER_POOLS["sync"]))
        processes.start("beat", commands["beat"])

        done = wait_for(
            lambda: (op := get_operation(base, user, operation_id))["status"] == "succeeded" and op, 60, "redelivery"
        )
        assert done["attempts"] == 2
        time.sleep(1)
        assert len(smtp.messages) == 1


def test_the_broker_down_at_request_time_delays_work_but_loses_none(farm_env, processes, tmp_path):
    broker = EmbeddedRedis(tmp_path / "broker")
    env = {**farm_env, "BROKER_URL": broker.start()}
    try:
        processes.env = env
        commands = process_commands(load_settings(env), all_queues_in_one_worker=True)
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        ingress = processes.start("ingress", commands["ingress"])
        processes.start("worker", commands["worker"])
        processes.start("beat", commands["beat"])
        wait_ready(base, ingress)
        user = register_user(base)

        broker.stop()
        started = time.monotonic()
        accepted = requests.post(f"{base}/api/v1/users/me/email-verification", headers=auth_header(user), timeout=10)
        assert accepted.status_code == 202
        assert time.monotonic() - started < 5
        operation_id = accepted.json()["operation"]["id"]
        time.sleep(2)
        assert get_operation(base, user, operation_id)["status"] == "queued"

        broker.start()
        wait_for(
            lambda: get_operation(base, user, operation_id)["status"] == "succeeded", 90, "the task after the outage"
        )
        assert len(mail_outbox(Path(env["DEEPREF_VAR_DIR"]))) == 1
    finally:
        processes.stop_all()
        broker.stop()
