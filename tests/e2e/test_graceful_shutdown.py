"""Graceful shutdown with real processes: SIGTERM finishes the work in hand and loses none.

The ingress (gunicorn with gevent workers) answers every request it has accepted before it
exits; a Celery worker finishes its running task, acknowledges it and exits, so neither the
broker nor beat's sweeps hand the task to another worker.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import time
from pathlib import Path

import pytest
import redis
import requests

from domain.core.config import load_settings
from ingress.cli import WORKER_POOLS, process_commands, worker_command
from tests.conftest import PASSWORD
from tests.e2e.helpers import Processes, auth_header, get_operation, port_open, register_user, wait_for, wait_ready
from tests.fakes import SmtpSink

pytestmark = pytest.mark.e2e

INGRESS_GRACEFUL_TIMEOUT = 30  # ingress/gunicorn.conf.py
IN_FLIGHT = 8


class SlowRegistration:
    """A registration from a slow client: headers now, the body only when `finish` is called.

    With `Expect: 100-continue` gunicorn answers "100 Continue" when it hands the request to
    the app, so once `wait_accepted` returns the request is in flight inside the worker.
    """

    def __init__(self, port: int) -> None:
        email = f"drain-{secrets.token_hex(4)}@example.com"
        self.body = json.dumps({"email": email, "password": PASSWORD, "role": "job_seeker", "name": "Slow"}).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        head = (
            "POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def wait_accepted(self) -> None:
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = self.sock.recv(1)
            assert chunk, "the server closed the connection before taking the request"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim

    def finish(self) -> int | str:
        """Send the body; the response's status code, or what went wrong instead."""
        response = b""
        try:
            self.sock.sendall(self.body)
            while chunk := self.sock.recv(65536):  # Connection: close ends the response
                response += chunk
        except OSError as exc:
            return repr(exc)
        finally:
            self.sock.close()
        return int(response.split(b" ", 2)[1]) if response else "closed without an answer"


def idle_keep_alive_connection(port: int) -> socket.socket:
    """A connection that has had its answer and stays open for the next request."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=INGRESS_GRACEFUL_TIMEOUT)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    stream = connection.makefile("rb")
    assert stream.readline().startswith(b"HTTP/1.1 200")
    headers = iter(stream.readline, b"\r\n")
    length = next(int(line.split(b":")[1]) for line in headers if line.lower().startswith(b"content-length:"))
    for _ in headers:  # the rest of the headers
        pass
    assert stream.read(length).startswith(b"{"), "the whole body, and the connection stays open"
    return connection


def test_sigterm_to_the_ingress_answers_every_request_in_flight_then_exits(
    farm_env: dict[str, str], processes: Processes
) -> None:
    env = {**farm_env, "LOGIN_RATE_LIMIT_PER_MINUTE": "100000"}
    processes.env = env
    port = int(env["INGRESS_PORT"])
    base = f"http://127.0.0.1:{port}"
    ingress = processes.start("ingress", process_commands(load_settings(env))["ingress"])
    wait_ready(base, ingress)
    in_flight = [SlowRegistration(port) for _ in range(IN_FLIGHT)]
    for registration in in_flight:
        registration.wait_accepted()
    idle = [idle_keep_alive_connection(port) for _ in range(IN_FLIGHT)]

    ingress.send_signal(signal.SIGTERM)
    # Connections waiting for a next request are closed at once, not after the keep-alive (65 s).
    assert [connection.recv(1) for connection in idle] == [b""] * IN_FLIGHT
    # New connections are refused while the accepted requests are still waiting for their bodies.
    wait_for(lambda: not port_open(port), INGRESS_GRACEFUL_TIMEOUT, "the ingress to stop listening")
    assert ingress.poll() is None, "the ingress exited with requests in flight"

    assert [registration.finish() for registration in in_flight] == [201] * IN_FLIGHT
    assert ingress.wait(INGRESS_GRACEFUL_TIMEOUT + 30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=5)
    log = (Path(env["DEEPREF_VAR_DIR"]) / "ingress.log").read_text()
    assert "graceful timeout" not in log.lower()


def _broker_holds(env: dict[str, str], queue: str) -> int:
    """Messages of `queue` the broker still keeps: waiting in the queue or delivered but unacknowledged."""
    with redis.Redis.from_url(load_settings(env).effective_broker_url or env["REDIS_URL"]) as broker:
        # kombu keeps a queue as lists (one per priority step) and unacked deliveries in one hash.
        lists = [key for key in broker.scan_iter(f"{queue}*") if broker.type(key) == b"list"]
        # An unacked entry is [message, exchange, routing key]; other queues' tasks (beat's) may be in flight.
        unacked = [json.loads(entry) for entry in broker.hvals("unacked")]
        return sum(int(broker.llen(key)) for key in lists) + sum(1 for entry in unacked if entry[2] == queue)


@pytest.mark.parametrize("pool", [WORKER_POOLS["email"], WORKER_POOLS["audit"]], ids=["gevent", "prefork"])
def test_sigterm_to_a_worker_mid_task_finishes_the_task_and_nothing_is_redelivered(
    farm_env: dict[str, str], processes: Processes, pool: list[str]
) -> None:
    visibility_timeout = 10
    with SmtpSink() as smtp:
        smtp.rcpt_delay = 3.0  # the task is talking to the mail server when SIGTERM arrives
        env = {
            **farm_env,
            **smtp.environment(),
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "TASK_TIME_LIMIT": "8",  # soft limit 7 s: well above the slow delivery
        }
        processes.env = env
        commands = process_commands(load_settings(env))
        base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
        ingress = processes.start("ingress", commands["ingress"])
        worker = processes.start("stopped-worker", worker_command(["email"], pool))
        wait_ready(base, ingress)
        user = register_user(base)
        accepted = requests.post(f"{base}/api/v1/users/me/email-verification", headers=auth_header(user), timeout=10)
        assert accepted.status_code == 202, accepted.text
        operation_id = accepted.json()["operation"]["id"]
        wait_for(lambda: get_operation(base, user, operation_id)["status"] == "running", 60, "the task to start")
        assert _broker_holds(env, "email") == 1  # delivered, not yet acknowledged (acks late)
        assert not smtp.messages, "the mail went out before SIGTERM: the task was not mid-way"

        worker.send_signal(signal.SIGTERM)  # the main process only, as a service manager does
        assert worker.wait(60) == 0  # a warm shutdown
        done = get_operation(base, user, operation_id)
        assert (done["status"], done["attempts"]) == ("succeeded", 1)
        assert [mail.rcpt_tos for mail in smtp.messages] == [[user["email"]]]
        assert _broker_holds(env, "email") == 0, "the finished task's message was not acknowledged"

        # A fresh farm past the visibility timeout and several of beat's sweeps (outbox relay,
        # unacked restore, reaper) finds nothing of the finished task to run again.
        smtp.rcpt_delay = 0.0
        processes.start("worker", worker_command(["email"], pool))
        processes.start("sync-worker", worker_command(["sync"], WORKER_POOLS["sync"]))
        processes.start("beat", commands["beat"])
        time.sleep(visibility_timeout + 5)
        # And the fresh farm does work: another user's verification goes through it.
        other = register_user(base)
        other_id = requests.post(
            f"{base}/api/v1/users/me/email-verification", headers=auth_header(other), timeout=10
        ).json()["operation"]["id"]
        wait_for(lambda: get_operation(base, other, other_id)["status"] == "succeeded", 60, "the fresh farm")

        again = get_operation(base, user, operation_id)
        assert (again["status"], again["attempts"]) == ("succeeded", 1)
        assert sorted(mail.rcpt_tos[0] for mail in smtp.messages) == sorted([user["email"], other["email"]])
        # The other verification's message is acknowledged as its task returns: wait for it, not for the clock.
        wait_for(lambda: _broker_holds(env, "email") == 0, 30, "the email queue to be empty and acknowledged")
