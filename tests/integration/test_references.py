"""References in one process: request → link by email → referee answers → verified → shared → read.

The ingress publishes to a recording sender and the `worker` fixture runs each published
task through the real task code, so every step below is what the workers would do.
"""

from __future__ import annotations

import re
from typing import Any

import falcon.testing

from domain.core.events import replay
from tests.conftest import Account, register, statements_during, without_savepoints
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
    """The token of the referee link in the newest (or `index`-th) mail that carries one."""
    bodies = [mail.get_body(("plain",)).get_content() for mail in mail_outbox(worker.var_dir)]
    tokens = [match.group(1) for body in bodies if (match := LINK.search(body))]
    return tokens[index]


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
    assert seen["answers"] == answers_for(opened.json)


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
    unknown_job = request_reference(client, candidate, jobId="00000000-0000-4000-8000-000000000000")
    assert (unknown_job.status_code, unknown_job.json["message"]) == (422, "jobId: no published job has this id")
    employer = register(client, role="employer")
    job = client.simulate_post(
        "/api/v1/jobs",
        json={"title": "Engineer", "description": "Builds things.", "remoteType": "remote"},
        headers=employer.auth,
    ).json
    assert request_reference(client, candidate, jobId=job["id"]).status_code == 422  # still a draft
    client.simulate_post(f"/api/v1/jobs/{job['id']}/publish", headers=employer.auth)
    for_job = request_reference(client, candidate, jobId=job["id"])
    assert (for_job.status_code, for_job.json["reference"]["jobId"]) == (202, job["id"])
    for _ in range(9):
        assert request_reference(client, candidate).status_code == 202
    eleventh = request_reference(client, candidate)
    assert eleventh.status_code == 422
    assert "10 requests awaiting an answer" in eleventh.json["message"]


def test_request_validation_and_roles(client: falcon.testing.TestClient) -> None:
    candidate = register(client)
    employer = register(client, role="employer")
    assert request_reference(client, employer).status_code == 404  # only candidates request references
    refused = {
        "consent withheld": {"consentToContact": False},
        "channel twice": {"channels": ["email", "email"]},
        "six questions": {"questions": [{"text": f"Question {n}?", "kind": "text"} for n in range(6)]},
        "unknown relationship": {"relationship": "cousin"},
        "unknown field": {"referee": "x"},
        "bad phone": {"referrer": {"name": "A", "phone": "0123"}},
    }
    for case, overrides in refused.items():
        result = request_reference(client, candidate, **overrides)
        assert result.status_code == 422, case
        assert result.json["details"], case


def _sent_reference(client: Any, worker: Any, candidate: Account, **overrides: Any) -> tuple[str, str]:
    accepted = request_reference(client, candidate, **overrides)
    assert accepted.status_code == 202, accepted.text
    worker.drain()
    return accepted.json["reference"]["id"], link_token(worker)


def test_referee_answers_are_validated(client, worker):
    candidate = register(client)
    _, token = _sent_reference(client, worker, candidate)
    questionnaire = client.simulate_get(f"/api/v1/referee/{token}").json
    answers = answers_for(questionnaire)
    cases = {
        "missing required": (answers[1:], "answers: question context is required"),
        "unknown question": ([*answers, {"questionId": "nope", "text": "x"}], "answers.8.questionId: no such question"),
        "answered twice": ([*answers, answers[0]], "answers.8.questionId: this question is answered twice"),
        "rating out of range": (
            [answers[0], {"questionId": "quality", "rating": 6}, *answers[2:]],
            "answers.1.rating: give a rating from 1 to 5",
        ),
        "text for a rating": (
            [answers[0], {"questionId": "quality", "text": "good"}, *answers[2:]],
            "answers.1.text: a rating question takes a rating, not text",
        ),
        "rating for text": (
            [{"questionId": "context", "rating": 3}, *answers[1:]],
            "answers.0.rating: a text question takes text, not a rating",
        ),
        "empty text": ([{"questionId": "context", "text": ""}, *answers[1:]], "answers.0.text: give a written answer"),
    }
    for case, (given, message) in cases.items():
        result = client.simulate_post(
            f"/api/v1/referee/{token}/response", json={"answers": given, "consentToShare": True}
        )
        assert result.status_code == 422, case
        assert result.json["message"].startswith(message), (case, result.json["message"])
    no_consent = client.simulate_post(
        f"/api/v1/referee/{token}/response", json={"answers": answers, "consentToShare": False}
    )
    assert no_consent.status_code == 422
    assert no_consent.json["details"][0]["field"] == "consentToShare"
    # Optional questions may be left out.
    optional = [a for a in answers if a["questionId"] != "development"]
    accepted = client.simulate_post(
        f"/api/v1/referee/{token}/response", json={"answers": optional, "consentToShare": True}
    )
    assert accepted.status_code == 202, accepted.text


def test_used_declined_revoked_expired_and_unknown_links(client, worker, connection):
    from sqlalchemy import text

    candidate = register(client)
    _, answered = _sent_reference(client, worker, candidate)
    questionnaire = client.simulate_get(f"/api/v1/referee/{answered}").json
    body = {"answers": answers_for(questionnaire), "consentToShare": True}
    assert client.simulate_post(f"/api/v1/referee/{answered}/response", json=body).status_code == 202
    again = client.simulate_post(f"/api/v1/referee/{answered}/response", json=body)
    assert again.status_code == 409
    assert again.json["message"] == "this reference was already answered; it cannot be answered again"
    assert client.simulate_post(f"/api/v1/referee/{answered}/decline").status_code == 409

    declined_id, declined = _sent_reference(client, worker, candidate, referrer={"name": "D", "email": "d@x.example"})
    result = client.simulate_post(f"/api/v1/referee/{declined}/decline", json={"reason": "I never worked with them"})
    assert result.status_code == 204
    assert client.simulate_post(f"/api/v1/referee/{declined}/response", json=body).status_code == 409
    worker.drain()
    notice = mail_outbox(worker.var_dir)[-1]
    assert notice["Subject"] == "D declined your reference request"
    assert "Their reason: I never worked with them" in notice.get_body(("plain",)).get_content()
    seen = client.simulate_get(f"/api/v1/references/{declined_id}", headers=candidate.auth).json
    assert (seen["status"], seen["declineReason"]) == ("declined", "I never worked with them")

    revoked_id, revoked = _sent_reference(client, worker, candidate, referrer={"name": "R", "email": "r@x.example"})
    assert client.simulate_post(f"/api/v1/references/{revoked_id}/revoke", headers=candidate.auth).status_code == 200
    twice = client.simulate_post(f"/api/v1/references/{revoked_id}/revoke", headers=candidate.auth)
    assert twice.status_code == 409
    assert twice.json["message"] == "this reference is revoked; it cannot become revoked"

    expired_id, expired = _sent_reference(client, worker, candidate, referrer={"name": "E", "email": "e@x.example"})
    connection.execute(
        text("UPDATE \"references\" SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": expired_id}
    )

    not_found = {"statusCode": 404, "message": "this link is not valid: it may have expired or been withdrawn"}
    for token in (answered, declined, revoked, expired, "A" * 43):
        result = client.simulate_get(f"/api/v1/referee/{token}")
        assert {k: result.json[k] for k in not_found} == not_found, token
    for token in (revoked, expired, "A" * 43):
        assert client.simulate_post(f"/api/v1/referee/{token}/response", json=body).status_code == 404
        assert client.simulate_post(f"/api/v1/referee/{token}/decline").status_code == 404
    late = client.simulate_post(f"/api/v1/references/{expired_id}/reminders", headers=candidate.auth)
    assert (late.status_code, late.json["message"]) == (409, "this request has expired; its link no longer works")


def test_reminders_are_spaced_limited_and_carry_working_links(client, worker, connection):
    from sqlalchemy import text

    candidate = register(client)
    accepted = request_reference(client, candidate)
    reference_id = accepted.json["reference"]["id"]
    early = client.simulate_post(f"/api/v1/references/{reference_id}/reminders", headers=candidate.auth)
    assert early.status_code == 409  # not delivered yet
    worker.drain()
    first_link = link_token(worker)
    reminded = client.simulate_post(f"/api/v1/references/{reference_id}/reminders", headers=candidate.auth)
    assert reminded.status_code == 202, reminded.text
    assert reminded.json["operation"]["kind"] == "reference.reminder"
    assert reminded.json["reference"]["remindersSent"] == 1
    worker.drain()
    reminder = mail_outbox(worker.var_dir)[-1]
    assert reminder["Subject"] == "Reminder: Test User is waiting for your reference"
    second_link = link_token(worker)
    assert second_link != first_link
    for token in (first_link, second_link):
        assert client.simulate_get(f"/api/v1/referee/{token}").status_code == 200

    soon = client.simulate_post(f"/api/v1/references/{reference_id}/reminders", headers=candidate.auth)
    assert soon.status_code == 429
    assert 86000 < int(soon.headers["Retry-After"]) <= 86401
    for _ in range(2):
        connection.execute(
            text("UPDATE \"references\" SET last_reminder_at = now() - interval '25 hours' WHERE id = :id"),
            {"id": reference_id},
        )
        assert (
            client.simulate_post(f"/api/v1/references/{reference_id}/reminders", headers=candidate.auth).status_code
            == 202
        )
    connection.execute(
        text("UPDATE \"references\" SET last_reminder_at = now() - interval '25 hours' WHERE id = :id"),
        {"id": reference_id},
    )
    fourth = client.simulate_post(f"/api/v1/references/{reference_id}/reminders", headers=candidate.auth)
    assert fourth.status_code == 409
    assert fourth.json["message"] == "all 3 reminders have been sent for this reference"


def test_sending_a_link_loads_the_owner_with_the_operation_and_writes_the_notification_once(
    client, worker, published, connection
):
    candidate = register(client)
    assert request_reference(client, candidate).status_code == 202
    [email] = [task for task in published if task.queue == "email"]
    published.remove(email)
    ran = without_savepoints(statements_during(connection, lambda: worker.run(email)))
    assert [s for s in ran if s.startswith("SELECT users.")] == []  # joined to the operation instead
    assert len([s for s in ran if s.startswith("UPDATE notifications")]) == 1
    assert len(mail_outbox(worker.var_dir)) == 1
