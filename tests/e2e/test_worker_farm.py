"""The worker farm with real processes: gunicorn, celery workers and beat, the relay.

Email goes to a real SMTP server and SMS to a local Twilio-style API, both started here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from domain.core.config import load_settings
from domain.core.embedded import EmbeddedRedis
from ingress.cli import WORKER_POOLS, process_commands, worker_command
from tests.conftest import PASSWORD, create_database, redis_db_url, worker_id, worker_number
from tests.e2e.conftest import process_env
from tests.e2e.test_processes import DEEPREF, _create_admin, _port_open, _stop, _wait_ready
from tests.fakes import FakeTwilio, SmtpSink, mail_outbox

pytestmark = pytest.mark.e2e
CODE = re.compile(r"\b(\d{6})\b")


@pytest.fixture
def farm_env(servers: Any, tmp_path: Path) -> dict[str, str]:
    redis_url = redis_db_url(servers.redis_url, 15 - worker_number() % 2)
    redis.Redis.from_url(redis_url).flushdb()
    database_url = create_database(servers.database_url, f"deepref_farm_{worker_id()}")
    return process_env(
        database_url,
        redis_url,
        tmp_path,
        WEB_CONCURRENCY="1",
        OUTBOX_RELAY_SECONDS="0.5",
        OUTBOX_GRACE_SECONDS="2",
        RATE_LIMIT_PER_MINUTE="100000",
        DEEPREF_ADMIN_PASSWORD=PASSWORD,
    )


class Processes:
    """Starts named processes from `process_commands` and kills what is left at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = Path(env["DEEPREF_VAR_DIR"])

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children (a prefork worker's pool): no goodbye."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def processes(farm_env: dict[str, str]) -> Iterator[Processes]:
    subprocess.run([DEEPREF, "migrate"], env=farm_env, check=True, capture_output=True, timeout=60)
    started = Processes(farm_env)
    yield started
    started.stop_all()


def _register(base: str, role: str = "job_seeker") -> dict[str, str]:
    email = f"farm-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": PASSWORD, "role": role, "name": "Farm User"}
    registered = requests.post(f"{base}/api/v1/auth/register", json=body, timeout=10)
    assert registered.status_code == 201, registered.text
    return {"email": email, "Authorization": f"Bearer {registered.json()['accessToken']}"}


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": user["Authorization"]}


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _operation(base: str, user: dict[str, str], operation_id: str) -> dict[str, Any]:
    return requests.get(f"{base}/api/v1/operations/{operation_id}", headers=_auth(user), timeout=10).json()  # type: ignore[no-any-return]


class EventStream:
    """Reads one SSE stream from the relay in a thread, keeping every event received."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.response = requests.get(url, stream=True, timeout=(5, 60))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "" and event:
                    self.events.append(event)
                    event = {}
                elif line and not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    event[field] = json.loads(value) if field == "data" else value
        except Exception:  # the test closed the stream
            return

    def find(self, operation_id: str, status: str) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in self.events
                if e.get("event") == "operation.updated"
                and e["data"]["id"] == operation_id
                and e["data"]["status"] == status
            ),
            None,
        )

    def close(self) -> None:
        self.response.close()


def test_email_verification_through_every_process_and_a_dead_operation_alerts_the_admins(farm_env):
    with SmtpSink() as smtp, FakeTwilio() as twilio:
        twilio.fail_next(500, times=1000)
        env = {**farm_env, **smtp.environment(), **twilio.environment(), "TASK_MAX_ATTEMPTS": "2"}
        subprocess.run([DEEPREF, "migrate"], env=env, check=True, capture_output=True, timeout=60)
        admin_email = f"root-{secrets.token_hex(4)}@example.com"
        assert _create_admin(admin_email, env).returncode == 0
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        relay = f"http://127.0.0.1:{env['RELAY_PORT']}"
        log = (Path(env["DEEPREF_VAR_DIR"]) / "run.log").open("wb")
        system = subprocess.Popen([DEEPREF, "run"], env=env, stdout=log, stderr=log)
        try:
            _wait_ready(base, system, timeout=120)
            user = _register(base)
            ticket = requests.post(f"{base}/api/v1/events/tickets", headers=_auth(user), timeout=10).json()["ticket"]
            stream = EventStream(f"{relay}/events?ticket={ticket}")
            accepted = requests.post(
                f"{base}/api/v1/users/me/email-verification",
                headers=_auth(user) | {"X-Request-Id": "farm-request-1"},
                timeout=10,
            )
            assert accepted.status_code == 202
            operation_id = accepted.json()["operation"]["id"]

            _wait_for(lambda: stream.find(operation_id, "succeeded"), 60, "the succeeded event over SSE")
            [mail] = smtp.wait_for(1, timeout=10)
            assert mail.rcpt_tos == [user["email"]]
            code = CODE.search(mail.text or "").group(1)
            confirmed = requests.post(
                f"{base}/api/v1/users/me/email-verification/confirm",
                json={"code": code},
                headers=_auth(user),
                timeout=10,
            )
            assert confirmed.status_code == 200 and confirmed.json()["emailVerified"] is True

            requests.patch(f"{base}/api/v1/users/me", json={"phone": "+14155550100"}, headers=_auth(user), timeout=10)
            doomed = requests.post(f"{base}/api/v1/users/me/phone-verification", headers=_auth(user), timeout=10)
            doomed_id = doomed.json()["operation"]["id"]
            _wait_for(lambda: stream.find(doomed_id, "dead"), 60, "the dead event over SSE")
            assert _operation(base, user, doomed_id)["attempts"] == 2
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

            assert _wait_for(audited, 30, "the audit entry")["valid"] is True
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
            assert _stop(system) == 0
            log.close()
    for port in ("INGRESS_PORT", "RELAY_PORT", "FLOWER_PORT"):
        assert not _port_open(int(env[port])), f"{port} still open after the stop"
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
        _wait_ready(base, ingress)
        user = _register(base)
        operation_id = requests.post(
            f"{base}/api/v1/users/me/email-verification", headers=_auth(user), timeout=10
        ).json()["operation"]["id"]
        _wait_for(lambda: _operation(base, user, operation_id)["status"] == "running", 60, "the task to start")
        processes.kill("doomed-worker")
        smtp.rcpt_delay = 0.0
        # The replacement is a gevent worker, which never sweeps for a dead worker's messages
        # itself: beat's restore task and the reaper must get the task back.
        processes.start("worker", worker_command(["email"], WORKER_POOLS["email"]))
        processes.start("sync-worker", worker_command(["sync"], WORKER_POOLS["sync"]))
        processes.start("beat", commands["beat"])

        done = _wait_for(
            lambda: (op := _operation(base, user, operation_id))["status"] == "succeeded" and op, 60, "redelivery"
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
        _wait_ready(base, ingress)
        user = _register(base)

        broker.stop()
        started = time.monotonic()
        accepted = requests.post(f"{base}/api/v1/users/me/email-verification", headers=_auth(user), timeout=10)
        assert accepted.status_code == 202
        assert time.monotonic() - started < 5
        operation_id = accepted.json()["operation"]["id"]
        time.sleep(2)
        assert _operation(base, user, operation_id)["status"] == "queued"

        broker.start()
        _wait_for(
            lambda: _operation(base, user, operation_id)["status"] == "succeeded", 90, "the task after the outage"
        )
        assert len(mail_outbox(Path(env["DEEPREF_VAR_DIR"]))) == 1
    finally:
        processes.stop_all()
        broker.stop()
