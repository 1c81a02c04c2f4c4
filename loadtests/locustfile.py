"""Locust scenarios for `make load`: candidates, referees and employers using a running system.

Who does what (FastHttpUser, think time `between(1, 3)` s; weights 5 : 3 : 2)
    Candidate  registers (job_seeker), holds an event stream on the relay (POST
               /api/v1/events/tickets, then GET {RELAY_URL}/events?ticket=… read by a greenlet of its
               own, reconnecting with a new ticket when it drops), asks referrers for references
               (POST /api/v1/references, staying under the server's 10 awaiting an answer), polls its
               operations (GET /api/v1/operations/{id}) until they end, lists its references and
               shares the completed ones with an employer of this run.
    Referee    no account: receives the request the way a real referee does, from the delivered
               message. With the default file outbox, that is the .eml files the `email` worker writes
               under <DEEPREF_VAR_DIR>/mail (LOAD_MAIL_DIR overrides); only messages to this run's
               referrer addresses (`load-<LOAD_RUN_ID>-…@referees.example`) are taken, each link by one
               referee. It opens the link (GET /api/v1/referee/{token}), thinks, then answers every
               question with `consentToShare: true` (POST …/response).
    Employer   registers, writes and publishes postings (POST /api/v1/jobs, POST /api/v1/jobs/{id}/publish),
               searches them (GET /api/v1/jobs?q=…) and reads the references shared with it
               (GET /api/v1/references).

What is measured
    Every request, named by its route template (`/api/v1/operations/[id]`, …) so that Locust's
    statistics group per endpoint. Two figures of the relay, as request type SSE: the time to open
    a stream (`/events?ticket=[ticket]`: ticket already held, until the status line), and the time
    from a 202 to the `operation.updated` event saying that operation ended (`operation ended
    (202 → event)`). A stream that fails or drops counts as a failure of `/events?ticket=[ticket]`.

Each simulated user sends `X-Forwarded-For` with an address of its own (the ingress believes it
from 127.0.0.1, TRUSTED_PROXIES' default), as a reverse proxy would: per-IP rate limits then apply
per simulated client, not to the whole run. The system should still be started with
BCRYPT_ROUNDS=4 (every user registers with real bcrypt) and RATE_LIMIT_PER_MINUTE /
LOGIN_RATE_LIMIT_PER_MINUTE raised (e.g. 1000000), as `make bench` does: see loadtests/load.py.

Environment: RELAY_URL (http://127.0.0.1:8001), LOAD_RUN_ID (a fresh id; `make load` sets it),
DEEPREF_VAR_DIR (<project>/var) or LOAD_MAIL_DIR; the ingress is Locust's --host.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
import uuid
from collections import deque
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
from locust import FastHttpUser, between, task
from locust.exception import RescheduleTask

from domain.core.config import PROJECT_ROOT
from loadtests.reference_bench import LINK, plain_text

API = "/api/v1"
RELAY_URL = os.environ.get("RELAY_URL", "http://127.0.0.1:8001").rstrip("/")
RUN_ID = os.environ.get("LOAD_RUN_ID") or uuid.uuid4().hex[:8]
REFERRER_DOMAIN = "referees.example"
REFERRER_PREFIX = f"load-{RUN_ID}-"
MAIL_DIR = Path(
    os.environ.get("LOAD_MAIL_DIR") or Path(os.environ.get("DEEPREF_VAR_DIR", PROJECT_ROOT / "var")) / "mail"
)
PASSWORD = "load test password 123"

# The server refuses an 11th request awaiting an answer; a candidate stays a little under it.
MAX_AWAITING = 8
AWAITING = frozenset({"pending", "sent", "opened"})
COMPLETED = frozenset({"verified", "flagged"})
TERMINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
RELATIONSHIPS = ("manager", "peer", "direct_report", "client", "academic")
SEARCH_WORDS = ("engineer", "python", "manager", "designer", "remote", "senior", "data", "support")
TITLES = ("Backend engineer", "Python developer", "Engineering manager", "Product designer", "Data analyst")
ANSWER_WORDS = ("led", "team", "release", "quality", "design", "shipped", "reliable", "planning", "calm", "honest")
# Seconds: the mail outbox is scanned at most this often (by whichever referee asks first).
MAIL_SCAN_INTERVAL = 1.0
# Seconds: no byte (a heartbeat comes every 15 s) for this long and a stream is reopened.
STREAM_READ_TIMEOUT = 45.0
STREAM_RETRY_PAUSE = 2.0

_numbers = itertools.count(1)
# Employers registered in this run, whom candidates share their completed references with.
employer_ids: list[str] = []


def client_address(number: int) -> str:
    """A distinct address in 10.0.0.0/8 for simulated client `number`."""
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255 or 1}"


class Mailbox:
    """The referee links delivered to this run's referrers, each handed out once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: set[str] = set()
        self.links: deque[str] = deque()
        self.scanned_at = 0.0
        self.parser = BytesParser()

    def take(self) -> str | None:
        """A link token not handed out before, or None when no new message has arrived."""
        if not self.links and time.monotonic() - self.scanned_at >= MAIL_SCAN_INTERVAL:
            self.scan()
        return self.links.popleft() if self.links else None

    def scan(self) -> None:
        self.scanned_at = time.monotonic()
        try:
            names = [entry.name for entry in os.scandir(self.directory) if entry.name.endswith(".eml")]
        except FileNotFoundError:
            return
        for name in names:
            if name not in self.seen:
                self.seen.add(name)
                self.read(self.directory / name)

    def read(self, path: Path) -> None:
        message = self.parser.parsebytes(path.read_bytes())
        if str(message["To"]).startswith(REFERRER_PREFIX) and (match := LINK.search(plain_text(message))):
            self.links.append(match.group(1))


mailbox = Mailbox(MAIL_DIR)


class Account(FastHttpUser):
    """A registered user: registers on start and sends its bearer token (refreshed before it expires)."""

    abstract = True
    wait_time = between(1, 3)
    role = "job_seeker"
    # Seconds: access tokens last 15 minutes.
    token_lifetime = 600.0

    def on_start(self) -> None:
        number = next(_numbers)
        self.address = client_address(number)
        self.email = f"load-{RUN_ID}-{self.role}-{number}@users.example"
        self.user_id = ""
        self.refresh_token = ""
        self.issued_at = 0.0
        self.headers: dict[str, str] = {"X-Forwarded-For": self.address}
        self.register()

    def register(self) -> None:
        """Sign up (a failure is in the statistics, and the next task tries again)."""
        body = {"email": self.email, "password": PASSWORD, "role": self.role, "name": f"Load {self.role}"}
        resp = self.client.post(f"{API}/auth/register", json=body, headers=self.headers)
        if resp.status_code == 201:
            self.keep_tokens(resp.json())
            self.registered()

    def registered(self) -> None:
        """Called once the account exists."""

    def keep_tokens(self, payload: dict[str, Any]) -> None:
        self.user_id = payload["user"]["id"] if "user" in payload else self.user_id
        self.refresh_token = payload["refreshToken"]
        self.issued_at = time.monotonic()
        self.headers = {"X-Forwarded-For": self.address, "Authorization": f"Bearer {payload['accessToken']}"}

    def auth(self) -> dict[str, str]:
        """The headers of an authenticated request, the access token refreshed first when it is old.

        Raises RescheduleTask (the task ends, the user thinks, then goes on) while registration has not succeeded.
        """
        if not self.user_id:
            self.register()
            if not self.user_id:
                raise RescheduleTask
        if time.monotonic() - self.issued_at > self.token_lifetime:
            resp = self.client.post(
                f"{API}/auth/refresh", json={"refreshToken": self.refresh_token}, headers=self.headers
            )
            if resp.status_code == 200:
                self.keep_tokens(resp.json())
        return self.headers


class Candidate(Account):
    weight = 5
    role = "job_seeker"

    def on_start(self) -> None:
        self.operations: dict[str, float] = {}  # operation id -> when its 202 came (monotonic)
        self.awaiting = 0
        self.shareable: list[str] = []
        self.shared: set[str] = set()
        self.stream: gevent.Greenlet | None = None
        super().on_start()

    def registered(self) -> None:
        self.stream = gevent.spawn(self.hold_stream)

    def on_stop(self) -> None:
        if self.stream is not None:
            self.stream.kill(block=False)

    @task(1)
    def request_reference(self) -> None:
        if self.awaiting >= MAX_AWAITING:
            return
        referrer = f"{REFERRER_PREFIX}{uuid.uuid4().hex[:12]}@{REFERRER_DOMAIN}"
        body = {"referrer": {"name": "Load Referee", "email": referrer}, "relationship": random.choice(RELATIONSHIPS)}
        resp = self.client.post(f"{API}/references", json=body, headers=self.auth())
        if resp.status_code == 202:
            self.awaiting += 1
            self.operations[resp.json()["operation"]["id"]] = time.monotonic()

    @task(4)
    def poll_operation(self) -> None:
        if not self.operations:
            return
        operation_id = next(iter(self.operations))
        resp = self.client.get(f"{API}/operations/{operation_id}", name=f"{API}/operations/[id]", headers=self.auth())
        if resp.status_code == 200 and resp.json()["status"] in TERMINAL:
            self.operations.pop(operation_id, None)

    @task(3)
    def list_references(self) -> None:
        resp = self.client.get(f"{API}/references?limit=100", name=f"{API}/references", headers=self.auth())
        if resp.status_code != 200:
            return
        items = resp.json()["items"]
        self.awaiting = sum(item["status"] in AWAITING for item in items)
        self.shareable = [item["id"] for item in items if item["status"] in COMPLETED and item["id"] not in self.shared]

    @task(1)
    def share_reference(self) -> None:
        if not self.shareable or not employer_ids:
            return
        reference_id = self.shareable.pop()
        body = {"employerId": random.choice(employer_ids)}
        resp = self.client.post(
            f"{API}/references/{reference_id}/shares",
            json=body,
            name=f"{API}/references/[id]/shares",
            headers=self.auth(),
        )
        if resp.ok:
            self.shared.add(reference_id)

    # --- the event stream ---------------------------------------------------------------------

    def hold_stream(self) -> None:
        """Keep one stream open for as long as the user runs, reopening it (new ticket) when it drops."""
        while True:
            started = time.monotonic()
            try:
                self.read_stream(self.ticket())
                error: Exception = ConnectionError("the relay closed the stream")
            except (OSError, ValueError, KeyError) as exc:
                error = exc
            self.record_stream(started, error)
            gevent.sleep(STREAM_RETRY_PAUSE)

    def ticket(self) -> str:
        resp = self.client.post(f"{API}/events/tickets", headers=self.auth())
        if resp.status_code != 201:
            raise ValueError(f"ticket refused: {resp.status_code}")
        return str(resp.json()["ticket"])

    def read_stream(self, ticket: str) -> None:
        relay = urlsplit(RELAY_URL)
        started = time.monotonic()
        with socket.create_connection((relay.hostname, relay.port or 80), timeout=STREAM_READ_TIMEOUT) as conn:
            # HTTP/1.0: the body is the raw event stream (no chunked encoding), ended by the close.
            conn.sendall(
                f"GET {relay.path}/events?ticket={ticket} HTTP/1.0\r\nHost: {relay.netloc}\r\n"
                f"Accept: text/event-stream\r\nX-Forwarded-For: {self.address}\r\n\r\n".encode()
            )
            stream = conn.makefile("rb")
            status = stream.readline().split(b" ", 2)
            if len(status) < 2 or status[1] != b"200":
                raise ValueError(f"relay answered {b' '.join(status).strip().decode(errors='replace')}")
            self.fire_sse("/events?ticket=[ticket]", started, None)
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass  # the response headers
            self.read_events(stream)

    def read_events(self, stream: Any) -> None:
        event, data = "", ""
        for raw in stream:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line:
                if event == "operation.updated" and data:
                    self.operation_event(json.loads(data))
                event, data = "", ""

    def operation_event(self, data: dict[str, Any]) -> None:
        accepted = self.operations.get(str(data.get("id")))
        if accepted is not None and data.get("status") in TERMINAL:
            self.operations.pop(str(data["id"]), None)
            self.fire_sse("operation ended (202 → event)", accepted, None)

    def record_stream(self, started: float, error: Exception) -> None:
        self.fire_sse("/events?ticket=[ticket]", started, error)

    def fire_sse(self, name: str, started: float, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=(time.monotonic() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


class Referee(FastHttpUser):
    """Answers the requests delivered to this run's referrers; no account."""

    weight = 3
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.headers = {"X-Forwarded-For": client_address(100_000 + next(_numbers))}
        # The link read on the previous turn and the answer written to it, sent on this turn.
        self.opened: tuple[str, dict[str, Any]] | None = None
        self.answer_key = ""

    @task
    def receive_or_answer(self) -> None:
        """Answer the questionnaire read on the previous turn (time to think), else open a new link."""
        if self.opened is None:
            self.open_link()
        else:
            opened, self.opened = self.opened, None
            self.answer(*opened)

    def open_link(self) -> None:
        token = mailbox.take()
        if token is None:
            return
        resp = self.client.get(f"{API}/referee/{token}", name=f"{API}/referee/[token]", headers=self.headers)
        if resp.status_code == 200:
            self.opened = (token, answers_to(resp.json()))
            self.answer_key = uuid.uuid4().hex
        elif resp.status_code == 0 or resp.status_code >= 500:
            mailbox.links.append(token)  # a real referee would click the link again later

    def answer(self, token: str, body: dict[str, Any]) -> None:
        # A retry sends the same body and Idempotency-Key: the server replays the first answer, not a 409.
        resp = self.client.post(
            f"{API}/referee/{token}/response",
            json=body,
            name=f"{API}/referee/[token]/response",
            headers={**self.headers, "Idempotency-Key": self.answer_key},
        )
        if resp.status_code == 0 or resp.status_code >= 500:
            self.opened = (token, body)  # answer again on the next turn


def answers_to(questionnaire: dict[str, Any]) -> dict[str, Any]:
    """A referee's answer to every question of `questionnaire`, consenting to share it."""
    answers: list[dict[str, Any]] = []
    for question in questionnaire["questions"]:
        if question["kind"] == "rating":
            answers.append({"questionId": question["id"], "rating": random.randint(3, 5)})
        else:
            text = " ".join(random.choice(ANSWER_WORDS) for _ in range(20))
            answers.append({"questionId": question["id"], "text": text.capitalize() + "."})
    return {"answers": answers, "consentToShare": True}


class Employer(Account):
    weight = 2
    role = "employer"

    def registered(self) -> None:
        employer_ids.append(self.user_id)

    @task(1)
    def post_job(self) -> None:
        body = {
            "title": random.choice(TITLES),
            "description": f"We are looking for a {random.choice(SEARCH_WORDS)} person to join the team.",
            "requirements": ["Python", "Teamwork"],
            "location": random.choice(("Berlin", "Lisbon", "Remote")),
            "remoteType": random.choice(("onsite", "hybrid", "remote")),
        }
        resp = self.client.post(f"{API}/jobs", json=body, headers=self.auth())
        if resp.status_code == 201:
            self.client.post(
                f"{API}/jobs/{resp.json()['id']}/publish", name=f"{API}/jobs/[id]/publish", headers=self.auth()
            )

    @task(5)
    def search_jobs(self) -> None:
        word = random.choice(SEARCH_WORDS)
        self.client.get(f"{API}/jobs?q={word}", name=f"{API}/jobs?q=[q]", headers=self.auth())

    @task(3)
    def read_references(self) -> None:
        self.client.get(f"{API}/references", headers=self.auth())
