"""A reference from request to an employer reading it, with every process real.

Ingress, relay, one worker per queue (ai, email, sms, audit, sync) and beat run as
separate processes; mail goes to a local SMTP server. The test acts as the three people
involved: the candidate (HTTP and their SSE stream), the referee (the link in their
mail, from another address and browser) and the employer the reference is shared with.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from domain.core.config import load_settings
from ingress.cli import process_commands
from tests.conftest import PASSWORD
from tests.e2e.helpers import (
    EventStream,
    auth_header,
    create_admin,
    get_operation,
    register_user,
    wait_for,
    wait_ready,
)
from tests.fakes import ReceivedMail
from tests.integration.test_references import answers_for

pytestmark = pytest.mark.e2e

PUBLIC_BASE_URL = "https://app.deepref.test"
LINK = re.compile(re.escape(PUBLIC_BASE_URL) + r"/referee/([A-Za-z0-9_\-]{43})\b")
REFERRER = {"name": "Rita Referee", "email": "rita@acme.example"}
CANDIDATE_BROWSER = {"User-Agent": "Mozilla/5.0 (candidate laptop)"}
# The ingress believes X-Forwarded-For from 127.0.0.1 (TRUSTED_PROXIES): the referee
# comes from another address and browser than the candidate, so no same-person signal.
REFEREE_BROWSER = {"User-Agent": "Mozilla/5.0 (referee phone)", "X-Forwarded-For": "198.51.100.7"}
# Generous on a loaded 2-core CI machine; a healthy run takes a fraction of each.
WAIT = 60


def _reference_statuses(stream: EventStream, reference_id: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in list(stream.events)
        if e.get("event") == "reference.updated" and e["data"]["id"] == reference_id
    ]


def _operation_statuses(stream: EventStream, operation_id: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in list(stream.events)
        if e.get("event") == "operation.updated" and e["data"]["id"] == operation_id
    ]


def _mail_to(smtp_sink: Any, address: str) -> ReceivedMail | None:
    return next((m for m in list(smtp_sink.messages) if m.rcpt_tos == [address]), None)


def test_a_reference_travels_from_request_to_an_employer_through_every_process(farm_env, processes, smtp_sink):
    env = {**farm_env, **smtp_sink.environment(), "PUBLIC_BASE_URL": PUBLIC_BASE_URL}
    processes.env = env
    commands = process_commands(load_settings(env))
    for name, command in commands.items():
        if name != "flower":  # Flower only watches; it takes no part in the workflow
            processes.start(name, command)
    base = f"http://127.0.0.1:{env['INGRESS_PORT']}"
    relay = f"http://127.0.0.1:{env['RELAY_PORT']}"
    admin_email = "root-references@example.com"
    created = create_admin(admin_email, env)
    assert created.returncode == 0, created.stderr
    wait_ready(base, processes.running["ingress"])
    wait_for(lambda: _relay_health(relay) is not None, WAIT, "the relay to listen")

    # 1. The candidate and an employer register; the candidate watches their events.
    candidate = register_user(base)
    employer = register_user(base, role="employer")
    ticket = requests.post(f"{base}/api/v1/events/tickets", headers=auth_header(candidate), timeout=10)
    assert ticket.status_code == 201, ticket.text
    stream = EventStream(f"{relay}/events?ticket={ticket.json()['ticket']}")
    try:
        # 2. The request reaches the referee's mailbox with their link.
        accepted = requests.post(
            f"{base}/api/v1/references",
            json={"referrer": REFERRER, "relationship": "manager"},
            headers=auth_header(candidate) | CANDIDATE_BROWSER,
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["operation"]["kind"] == "reference.request"
        reference_id = accepted.json()["reference"]["id"]
        request_mail = wait_for(lambda: _mail_to(smtp_sink, REFERRER["email"]), WAIT, "the request email")
        assert request_mail.subject == "Farm User asks you for a reference"
        link = LINK.search(request_mail.text or "")
        assert link is not None, request_mail.text
        token = link.group(1)
        # The mail leaves before the worker commits `sent`; a referee opening the link in
        # between would skip that status. Waiting for it keeps the sequence deterministic.
        wait_for(lambda: "sent" in _reference_statuses(stream, reference_id), WAIT, "the sent event")

        # 3. The referee opens the link and answers every question.
        opened = requests.get(f"{base}/api/v1/referee/{token}", headers=REFEREE_BROWSER, timeout=10)
        assert opened.status_code == 200, opened.text
        questionnaire = opened.json()
        assert questionnaire["candidate"] == {"name": "Farm User"}
        assert questionnaire["relationship"] == "manager"
        answers = answers_for(questionnaire)
        submitted = requests.post(
            f"{base}/api/v1/referee/{token}/response",
            json={"answers": answers, "consentToShare": True},
            headers=REFEREE_BROWSER,
            timeout=10,
        )
        assert submitted.status_code == 202, submitted.text
        verify = submitted.json()["operation"]
        assert verify["kind"] == "reference.verify"

        # 4. The candidate sees the verification run and the reference end flagged:
        # answered seconds after opening is implausibly fast.
        wait_for(lambda: stream.find(verify["id"], "succeeded"), WAIT, "the verify operation over SSE")
        wait_for(lambda: "flagged" in _reference_statuses(stream, reference_id), WAIT, "the flagged event")
        # Each transaction's events are published before its tasks, so no worker's event
        # can overtake the state that queued it.
        assert _reference_statuses(stream, reference_id) == ["pending", "sent", "opened", "submitted", "flagged"]
        assert _operation_statuses(stream, verify["id"]) == ["running", "succeeded"]
    finally:
        stream.close()
    done = get_operation(base, candidate, verify["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["result"] == {"referenceId": reference_id, "status": "flagged"}
    mine = requests.get(f"{base}/api/v1/references/{reference_id}", headers=auth_header(candidate), timeout=10).json()
    assert mine["status"] == "flagged"
    assert mine["verification"]["provider"] == "local"
    assert [(s["code"], s["severity"]) for s in mine["verification"]["signals"]] == [("fast_submission", "strong")]

    # 6. The candidate is told by email that the reference is ready.
    ready = wait_for(lambda: _mail_to(smtp_sink, candidate["email"]), WAIT, "the reference-ready email")
    assert ready.subject == "Your reference from Rita Referee is ready"
    assert "flagged for review" in (ready.text or "")

    # 7. Shared with the employer, who reads the answers but not the referee's contacts.
    shared = requests.post(
        f"{base}/api/v1/references/{reference_id}/shares",
        json={"employerEmail": employer["email"]},
        headers=auth_header(candidate),
        timeout=10,
    )
    assert shared.status_code == 201, shared.text
    listed = requests.get(f"{base}/api/v1/references", headers=auth_header(employer), timeout=10)
    assert [r["id"] for r in listed.json()["items"]] == [reference_id]
    seen = requests.get(f"{base}/api/v1/references/{reference_id}", headers=auth_header(employer), timeout=10).json()
    assert seen["referrer"] == {"name": "Rita Referee"}
    assert "channels" not in seen and "shares" not in seen
    assert seen["answers"] == answers
    assert [s["code"] for s in seen["verification"]["signals"]] == ["fast_submission"]

    # 8. The link is spent: a second answer is refused and the questionnaire is gone.
    again = requests.post(
        f"{base}/api/v1/referee/{token}/response",
        json={"answers": answers, "consentToShare": True},
        headers=REFEREE_BROWSER,
        timeout=10,
    )
    assert again.status_code == 409, again.text
    assert again.json()["message"] == "this reference was already answered; it cannot be answered again"
    gone = requests.get(f"{base}/api/v1/referee/{token}", headers=REFEREE_BROWSER, timeout=10)
    assert gone.status_code == 404, gone.text

    # 5. Every step reached the audit trail through the audit worker, and the chain holds.
    # Checked last: the entries are appended asynchronously, and sharing adds one too.
    login = requests.post(f"{base}/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    expected = {"reference.requested", "reference.submitted", "reference.flagged", "reference.shared"}
    entries = wait_for(lambda: _audited(base, admin, reference_id, expected), WAIT, "the audit entries")
    assert sorted(e["action"] for e in entries) == sorted(expected)  # each fact once, nothing else
    flagged = next(e for e in entries if e["action"] == "reference.flagged")
    assert flagged["data"]["signals"] == "fast_submission"
    report = requests.get(f"{base}/api/v1/audit/verify", headers=admin, timeout=10).json()
    assert report["valid"] is True and report["entries"] >= len(expected)


def _relay_health(relay: str) -> dict[str, Any] | None:
    try:
        health: dict[str, Any] = requests.get(f"{relay}/healthz", timeout=2).json()
    except requests.RequestException:  # not listening yet
        return None
    return health


def _audited(base: str, admin: dict[str, str], reference_id: str, expected: set[str]) -> list[dict[str, Any]] | None:
    page = requests.get(
        f"{base}/api/v1/audit/entries",
        params={"subjectType": "reference", "subjectId": reference_id},
        headers=admin,
        timeout=10,
    )
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items if expected <= {e["action"] for e in items} else None
