"""`make bench`: what the reference workflow's two requests need before they can be loaded.

POST /api/v1/references
    A candidate may have at most REQUESTS_PER_CANDIDATE requests awaiting an answer, so the
    clients share a script (loadtests.loadgen `steps`, each sent once) of BENCH_REFERENCE_REQUESTS
    requests (rounded up to whole candidates), ten per candidate, each to a referrer address of
    its own. The script goes round the candidates (at least one per client), so no two requests of
    one candidate are in flight together: the server serialises a candidate's requests, and
    candidates do not send theirs in parallel. The clients' own accounts are the first
    candidates, the others are registered before the load.
POST /api/v1/referee/{token}/response
    A link works once, and its token exists only in the message sent to the referee. So before
    the window: an `email` worker delivers the links of the references the previous scenario
    created (more are requested when they are too few) to the file outbox,
    <DEEPREF_VAR_DIR>/mail; the tokens are read back from the .eml files; each link is opened
    once (GET, as a referee would) to learn its questions; the worker is stopped. The clients
    then share BENCH_REFEREE_LINKS links, one submission per link, each from a referee address
    of its own (X-Forwarded-For).

The bare app gets the same headers and bodies, client i repeating step i, at POST /echo.
Also used by loadtests/reference_pipeline.py to prepare its links.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import redis

from loadtests.loadgen import ClientSpec, Step
from loadtests.pipeline_bench import background, wait_for_worker, worker_command
from loadtests.servers import API, VAR, Account, register_accounts, request

# The server's limit on a candidate's requests awaiting an answer (domain/references/service.py).
REQUESTS_PER_CANDIDATE = 10
REFERENCES = f"{API}/references"
REFERRER_DOMAIN = "referees.example"
LOAD_PREFIX = "load-"
LINK = re.compile(r"/referee/([A-Za-z0-9_\-]{43})\b")
JSON = {"Content-Type": "application/json"}
CANDIDATE_BROWSER = "Mozilla/5.0 (bench candidate)"
REFEREE_BROWSER = "Mozilla/5.0 (bench referee)"
# Threads preparing references and opening links (not measured).
PREPARING_THREADS = 8
# Seconds without progress on a queue before the wait for a worker is given up.
DRAIN_STALL = 60.0
# Words the referees' written answers are drawn from, so that no two references read alike.
WORDS = ("led", "team", "release", "quality", "design", "shipped", "reliable", "planning", "calm", "honest", "owned")
ANSWER_WORDS = 24


@dataclass(frozen=True)
class Script:
    """A scenario of requests made once: the clients' own headers, and the steps they share."""

    clients: list[ClientSpec]
    steps: list[Step]


@dataclass(frozen=True)
class Link:
    """A referee link ready to be answered: its token and the body answering every question."""

    token: str
    body: str


@dataclass(frozen=True)
class Created:
    """A reference request accepted by the ingress: whose it is, and where its link was sent."""

    candidate: int
    reference_id: str
    referrer_email: str


# --- POST /references -------------------------------------------------------------------------


def request_body(referrer_email: str) -> str:
    return json.dumps({"referrer": {"name": "Bench Referee", "email": referrer_email}, "relationship": "manager"})


def request_script(port: int, accounts: Sequence[Account], total: int) -> Script:
    """About `total` requests for the clients `accounts` (one each) to share, going round the candidates."""
    count = max(len(accounts), math.ceil(total / REQUESTS_PER_CANDIDATE))
    candidates = [*accounts, *register_accounts(port, count - len(accounts), prefix="candidate")]
    steps = [
        Step(
            path=REFERENCES,
            body=request_body(f"{LOAD_PREFIX}{number}-{n}@{REFERRER_DOMAIN}"),
            headers={"Authorization": f"Bearer {candidate.access_token}"},
        )
        for n in range(REQUESTS_PER_CANDIDATE)
        for number, candidate in enumerate(candidates)
    ]
    return Script([ClientSpec(headers=JSON) for _ in accounts], steps)


def create_references(port: int, candidates: Sequence[Account], prefix: str) -> list[Created]:
    """REQUESTS_PER_CANDIDATE requests for each candidate (candidates in parallel), to referrers `<prefix>…`."""

    def ask(number: int) -> list[Created]:
        headers = {"Authorization": f"Bearer {candidates[number].access_token}", "User-Agent": CANDIDATE_BROWSER}
        created = []
        for n in range(REQUESTS_PER_CANDIDATE):
            email = f"{prefix}{number}-{n}@{REFERRER_DOMAIN}"
            body = json.loads(request_body(email))
            status, payload = request(port, "POST", REFERENCES, body, headers=headers)
            if status != 202:
                raise RuntimeError(f"POST {REFERENCES} answered {status}: {payload[:300]!r}")
            created.append(Created(number, str(json.loads(payload)["reference"]["id"]), email))
        return created

    with ThreadPoolExecutor(PREPARING_THREADS) as pool:
        return [c for batch in pool.map(ask, range(len(candidates))) for c in batch]


# --- links ------------------------------------------------------------------------------------


def outbox(env: Mapping[str, str]) -> Path:
    """Where the workers write email when SMTP_URL is unset (the bench unsets it)."""
    return Path(env["DEEPREF_VAR_DIR"]) / "mail"


def clear_outbox(env: Mapping[str, str]) -> None:
    """Forget the mail of earlier runs: their links point into a database that was dropped."""
    shutil.rmtree(outbox(env), ignore_errors=True)


def broker(env: Mapping[str, str]) -> redis.Redis:
    return redis.Redis.from_url(env.get("BROKER_URL") or env["REDIS_URL"])


def drain(client: redis.Redis, queue: str) -> None:
    """Wait until `queue` is empty and no task is left unacknowledged (a worker must be consuming it)."""
    last, changed = -1, time.monotonic()
    while True:
        pending = int(client.llen(queue)) + int(client.hlen("unacked"))
        if pending == 0:
            return
        if pending != last:
            last, changed = pending, time.monotonic()
        elif time.monotonic() - changed > DRAIN_STALL:
            raise RuntimeError(f"{pending} tasks on {queue} made no progress in {DRAIN_STALL:g} s; see {VAR}/*.log")
        time.sleep(0.2)


def read_links(directory: Path, prefix: str) -> dict[str, str]:
    """The referee link tokens in the outbox's .eml files, by recipient, for recipients starting with `prefix`."""
    # The legacy (compat32) parser: a tenth of the modern policy's time, which counts for thousands of files.
    parser = BytesParser()
    links = {}
    for path in sorted(directory.glob("*.eml")):
        message = parser.parsebytes(path.read_bytes())
        recipient = str(message["To"])
        if recipient.startswith(prefix) and (match := LINK.search(plain_text(message))):
            links[recipient] = match.group(1)
    return links


def plain_text(message: Message) -> str:
    """The message's first text/plain part, decoded ("" if it has none)."""
    for part in message.walk():
        payload = part.get_payload(decode=True) if part.get_content_type() == "text/plain" else None
        if isinstance(payload, bytes):
            return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return ""


def prepare_links(env: Mapping[str, str], port: int, count: int) -> list[Link]:
    """`count` links of references awaiting their referee, opened once (see the module's docstring)."""
    client = broker(env)
    clear_outbox(env)
    started = time.monotonic()
    with background("worker-email-links", worker_command("email"), env):
        wait_for_worker(VAR / "worker-email-links.log")
        drain(client, "email")
        tokens = list(read_links(outbox(env), LOAD_PREFIX).values())
        if len(tokens) < count:
            more = math.ceil((count - len(tokens)) / REQUESTS_PER_CANDIDATE)
            create_references(port, register_accounts(port, more, prefix="topup"), f"{LOAD_PREFIX}topup-")
            drain(client, "email")
            tokens = list(read_links(outbox(env), LOAD_PREFIX).values())
    delivered = time.monotonic()
    links = open_links(port, tokens[:count])
    print(
        f"bench: {len(tokens)} links delivered in {delivered - started:.0f} s, {len(links)} opened in "
        f"{time.monotonic() - delivered:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return links


def open_links(port: int, tokens: Sequence[str], seed: int = 0) -> list[Link]:
    """GET each link (in parallel) as its referee would, and write the answers to its questions."""

    def visit(number: int) -> Link:
        token = tokens[number]
        status, payload = request(port, "GET", f"{API}/referee/{token}", headers=referee_headers(number))
        if status != 200:
            raise RuntimeError(f"GET /referee/{{token}} answered {status}: {payload[:300]!r}")
        return Link(token, submission_body(json.loads(payload), random.Random(seed + number)))

    with ThreadPoolExecutor(PREPARING_THREADS) as pool:
        return list(pool.map(visit, range(len(tokens))))


def referee_headers(number: int) -> dict[str, str]:
    """A referee's browser and address (documentation range; the ingress trusts loopback's X-Forwarded-For)."""
    return {"User-Agent": REFEREE_BROWSER, "X-Forwarded-For": f"198.51.100.{number % 254 + 1}"}


def submission_body(questionnaire: dict[str, Any], rng: random.Random) -> str:
    """Answers to every question of the questionnaire, and the consent to share."""
    answers: list[dict[str, Any]] = []
    for question in questionnaire["questions"]:
        if question["kind"] == "rating":
            answers.append({"questionId": question["id"], "rating": rng.randint(3, 5)})
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(ANSWER_WORDS))
            answers.append({"questionId": question["id"], "text": text.capitalize() + "."})
    return json.dumps({"answers": answers, "consentToShare": True})


# --- POST /referee/{token}/response -----------------------------------------------------------


def referee_script(links: Sequence[Link], clients: int) -> Script:
    """The links for `clients` clients to share, each submitted once from its referee's address."""
    steps = [
        Step(
            path=f"{API}/referee/{link.token}/response",
            body=link.body,
            headers={"X-Forwarded-For": referee_headers(number)["X-Forwarded-For"]},
        )
        for number, link in enumerate(links)
    ]
    return Script([ClientSpec(headers=JSON) for _ in range(clients)], steps)
