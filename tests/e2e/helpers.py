"""What the end-to-end tests share: the processes they start and how they talk to them."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import PASSWORD

DEEPREF = str(Path(sys.executable).with_name("deepref"))


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "deepref run exited early"
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or workers still booting
            pass
        time.sleep(0.2)
    raise AssertionError("ingress did not become ready")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(60)


def create_admin(email: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [DEEPREF, "create-admin", "--email", email, "--name", "Root"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


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


def register_user(base: str, role: str = "job_seeker") -> dict[str, str]:
    email = f"farm-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": PASSWORD, "role": role, "name": "Farm User"}
    registered = requests.post(f"{base}/api/v1/auth/register", json=body, timeout=10)
    assert registered.status_code == 201, registered.text
    return {"email": email, "Authorization": f"Bearer {registered.json()['accessToken']}"}


def auth_header(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": user["Authorization"]}


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def get_operation(base: str, user: dict[str, str], operation_id: str) -> dict[str, Any]:
    return requests.get(f"{base}/api/v1/operations/{operation_id}", headers=auth_header(user), timeout=10).json()  # type: ignore[no-any-return]


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
