"""References in one process: request → link by email → referee answers → verified → shared → read.

The ingress publishes to a recording sender and the `worker` fixture runs each published
task through the real task code, so every step below is what the workers would do.
"""

from __future__ import annotations

import re
from typing import Any

import falcon.testing

from domain.core.events import replay
from tests.conftest import Account, register
from tests.fakes import mail_outbox, sms_outbox

LINK = re.compile(r"/referee/([A-Za-z0-9_\-]{43})\b")
BROWSER = {"User-Agent": "Mozilla/5.0 (candidate laptop)"}
REFEREE_BROWSER = {"User-Agent": "Mozilla/5.0 (referee phone)", "X-Forwarded-For": "198.51.100.7"}


def request_reference(client: Any, candidate: Account, **overrides: Any) -> Any:
    body = {
        "referrer": {"name": "Rita Referee", "email": "rita@acme.example"},
        "relationship": "manager",
        **overrides,
    }
    return client.simulate_post("/api/v1/references", json=body, headers={**candidate.auth, **BROWSER})


def answers_for(questionnaire: dict[str, Any], text: str = "") -> list[dict[str, Any]]:
    answers = []
    for n, question in enumerate(questionnaire["questions"]):
        if question["kind"] == "rating":
            answers.append({"questionId": question["id"], "rating": 4 + n % 2})
        else:
            answers.append({"questionId": question["id"], "text": text or f"Answer {n}: led the 2024 migration."})
    return answers


def link_token(worker: Any, index: int = -1) -> str:
    mail = mail_outbox(worker.var_dir)[index]
    match = LINK.search(mail.get_body(("plain",)).get_content())
    assert match is not None
    return match.group(1)


def test_the_whole_workflow_from_request_to_an_employer_reading_it(client, worker, published, redis_client):
    candidate = register(client)
    employer = register(client, role="employer")
    accepted = request_reference(client, candidate, questions=[{"text": "Would you hire them again?", "kind": "text"}])
    assert accepted.status_code == 202, accepted.text
    reference = accepted.json["reference"]
    assert reference["status"] == "pending"
    assert reference["referrer"] == {"name": "Rita Referee", "email": "rita@acme.example", "phone": None}
    assert reference["channels"] == ["email"]
    assert reference["questionnaire"] == {"name": "manager", "version": 1}
    assert reference["questions"][-1] == {
        "id": "custom-1",
        "text": "Would you hire them again?",
        "kind": "text",
        "required": True,
    }
    assert accepted.json["operation"]["kind"] == "reference.request"
    assert {t.queue for t in published} == {"email", "audit"}

    worker.drain()
    [mail] = mail_outbox(worker.var_dir)
    assert mail["To"] == "rita@acme.example"
    assert "Test User asks you for a reference" in mail["Subject"]
    token = link_token(worker)
    item = client.simulate_get(f"/api/v1/references/{reference['id']}", headers=candidate.auth)
    assert item.json["status"] == "sent"

    opened = client.simulate_get(f"/api/v1/referee/{token}", headers=REFEREE_BROWSER)
    assert opened.status_code == 200, opened.text
    assert opened.json["candidate"] == {"name": "Test User"}
    assert opened.json["relationship"] == "manager"
    assert len(opened.json["questions"]) == 9

    submitted = client.simulate_post(
        f"/api/v1/referee/{token}/response",
        json={"answers": answers_for(opened.json), "consentToShare": True},
        headers=REFEREE_BROWSER,
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json["operation"]["kind"] == "reference.verify"
    assert {t.queue for t in published} == {"ai", "audit"}
    worker.drain()

    done = client.simulate_get(f"/api/v1/references/{reference['id']}", headers=candidate.auth).json
    # Submitted seconds after opening: the fast-submission signal flags it.
    assert done["status"] == "flagged"
    verification = done["verification"]
    assert verification["provider"] == "local"
    assert verification["deterministic"] is True
    assert verification["summary"].startswith("Automated heuristic assessment (no language model was used).")
    assert [s["code"] for s in verification["signals"]] == ["fast_submission"]
    assert [m["Subject"] for m in mail_outbox(worker.var_dir)][-1] == "Your reference from Rita Referee is ready"

    events = [e for e in replay(redis_client, candidate.id, "0-0") if e.name == "reference.updated"]
    assert [e.data.split('"status":"')[1].split('"')[0] for e in events] == [
        "pending",
        "sent",
        "opened",
        "submitted",
        "flagged",
    ]

    shared = client.simulate_post(
        f"/api/v1/references/{reference['id']}/shares", json={"employerEmail": employer.email}, headers=candidate.auth
    )
    assert shared.status_code == 201, shared.text
    assert shared.json["employer"]["id"] == employer.id
    listed = client.simulate_get("/api/v1/references", headers=employer.auth)
    assert [r["id"] for r in listed.json["items"]] == [reference["id"]]
    seen = client.simulate_get(f"/api/v1/references/{reference['id']}", headers=employer.auth).json
    assert seen["referrer"] == {"name": "Rita Referee"}
    assert "channels" not in seen and "shares" not in seen
    assert seen["verification"]["signals"][0]["code"] == "fast_submission"
    assert len(seen["answers"]) == 9


def test_a_reference_by_sms_and_email_sends_both(client, worker, published):
    candidate = register(client)
    accepted = request_reference(
        client,
        candidate,
        referrer={"name": "Sam", "email": "sam@example.org", "phone": "+14155550100"},
        channels=["email", "sms"],
    )
    assert accepted.status_code == 202, accepted.text
    assert [o["kind"] for o in accepted.json["operations"]] == ["reference.request", "reference.request"]
    worker.drain()
    [sms] = sms_outbox(worker.var_dir)
    assert sms["to"] == "+14155550100"
    assert LINK.search(sms["body"])
    assert len(mail_outbox(worker.var_dir)) == 1


def test_refusals_when_requesting(client: falcon.testing.TestClient) -> None:
    candidate = register(client)
    own = request_reference(client, candidate, referrer={"name": "Me", "email": candidate.email.upper()})
    assert own.status_code == 422
    assert own.json["message"] == "referrer.email: the referrer cannot be you: this is your own email address"
    unreachable = request_reference(client, candidate, referrer={"name": "Nobody"})
    assert unreachable.status_code == 422
    assert unreachable.json["message"].startswith("channels: no channel reaches the referrer")
    no_phone = request_reference(client, candidate, channels=["sms"])
    assert no_phone.status_code == 422
    assert no_phone.json["message"] == "channels: channel sms needs referrer.phone"
    for _ in range(10):
        assert request_reference(client, candidate).status_code == 202
    eleventh = request_reference(client, candidate)
    assert eleventh.status_code == 422
    assert "10 requests awaiting an answer" in eleventh.json["message"]
