"""Who sees what of a reference, sharing, fraud signals, beat's reminders and expiry, and delivery twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select, text

from domain.core.db import Database, utcnow
from domain.references import maintenance
from domain.references.models import ReferenceStatus
from domain.users.models import User
from tests.conftest import Account, register
from tests.fakes import mail_outbox
from tests.integration.test_references import (
    REFEREE_BROWSER,
    answers_for,
    link_token,
    request_reference,
)


def _submit(client: Any, token: str, headers: dict[str, str] | None = None, text_answer: str = "") -> Any:
    questionnaire = client.simulate_get(f"/api/v1/referee/{token}", headers=headers or REFEREE_BROWSER).json
    body = {"answers": answers_for(questionnaire, text_answer), "consentToShare": True}
    return client.simulate_post(f"/api/v1/referee/{token}/response", json=body, headers=headers or REFEREE_BROWSER)


def _backdate_opening(connection: Any, reference_id: str, minutes: int = 15) -> None:
    connection.execute(
        text('UPDATE "references" SET opened_at = now() - make_interval(mins => :m) WHERE id = :id'),
        {"m": minutes, "id": reference_id},
    )


def _completed(client: Any, worker: Any, connection: Any, candidate: Account, **overrides: Any) -> str:
    """A verified reference: answered from another address, at a plausible pace."""
    accepted = request_reference(client, candidate, **overrides)
    reference_id = accepted.json["reference"]["id"]
    worker.drain()
    token = link_token(worker)
    client.simulate_get(f"/api/v1/referee/{token}", headers=REFEREE_BROWSER)
    _backdate_opening(connection, reference_id)
    assert _submit(client, token).status_code == 202
    worker.drain()
    return str(reference_id)


def test_a_plausible_answer_from_elsewhere_is_verified_without_signals(client, worker, connection):
    candidate = register(client)
    reference_id = _completed(client, worker, connection, candidate)
    shown = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    assert shown["status"] == "verified"
    assert shown["verification"]["signals"] == []
    assert 0 <= shown["verification"]["score"] <= 100
    assert shown["completedAt"] is not None


def test_fraud_signals_same_address_and_reused_referee(client, worker, connection):
    candidate = register(client)
    _completed(client, worker, connection, candidate)
    # The same referee again, answering from the candidate's own address and browser.
    accepted = request_reference(client, candidate)
    reference_id = accepted.json["reference"]["id"]
    worker.drain()
    same_browser = {"User-Agent": "Mozilla/5.0 (candidate laptop)"}
    token = link_token(worker)
    client.simulate_get(f"/api/v1/referee/{token}", headers=same_browser)
    _backdate_opening(connection, reference_id)
    assert _submit(client, token, headers=same_browser).status_code == 202
    worker.drain()
    shown = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    assert shown["status"] == "flagged"
    codes = [s["code"] for s in shown["verification"]["signals"]]
    assert codes == ["same_ip", "same_user_agent", "duplicate_referee_contact", "similar_answers"]
    assert all("127.0.0.1" not in s["message"] for s in shown["verification"]["signals"])


def test_every_route_hides_other_peoples_references(client, worker, connection):
    owner = register(client)
    other = register(client)
    employer = register(client, role="employer")
    reference_id = _completed(client, worker, connection, owner)
    base = f"/api/v1/references/{reference_id}"
    attempts = [
        ("GET", base, None),
        ("POST", f"{base}/reminders", None),
        ("POST", f"{base}/revoke", None),
        ("POST", f"{base}/shares", {"employerId": employer.id}),
        ("DELETE", f"{base}/shares/{employer.id}", None),
    ]
    for method, path, body in attempts:
        result = client.simulate_request(method, path, json=body, headers=other.auth)
        assert result.status_code == 404, (method, path)
        assert result.json["message"] == "reference not found"
    assert client.simulate_get(base, headers=employer.auth).status_code == 404  # not shared with them
    assert client.simulate_get("/api/v1/references", headers=employer.auth).json["items"] == []
    assert client.simulate_get("/api/v1/references", headers=other.auth).json["items"] == []


def test_sharing_and_unsharing(client, worker, connection, redis_client):
    from domain.core.events import replay

    candidate = register(client)
    employer = register(client, role="employer")
    not_an_employer = register(client)
    pending = request_reference(client, candidate, referrer={"name": "P", "email": "p@x.example"})
    early = client.simulate_post(
        f"/api/v1/references/{pending.json['reference']['id']}/shares",
        json={"employerId": employer.id},
        headers=candidate.auth,
    )
    assert early.status_code == 409
    assert early.json["message"] == "this reference is pending; only a verified or flagged reference can be shared"
    reference_id = _completed(client, worker, connection, candidate)
    shares = f"/api/v1/references/{reference_id}/shares"
    for body in ({"employerId": not_an_employer.id}, {"employerEmail": "nobody@x.example"}, {}):
        assert client.simulate_post(shares, json=body, headers=candidate.auth).status_code == 422, body
    first = client.simulate_post(shares, json={"employerId": employer.id}, headers=candidate.auth)
    again = client.simulate_post(shares, json={"employerEmail": employer.email}, headers=candidate.auth)
    assert first.status_code == again.status_code == 201
    assert first.json == again.json
    shown = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    assert [s["employer"]["id"] for s in shown["shares"]] == [employer.id]
    assert [e.name for e in replay(redis_client, employer.id, "0-0")] == ["reference.shared"]

    assert client.simulate_delete(f"{shares}/{employer.id}", headers=candidate.auth).status_code == 204
    assert client.simulate_delete(f"{shares}/{employer.id}", headers=candidate.auth).status_code == 404
    assert client.simulate_get(f"/api/v1/references/{reference_id}", headers=employer.auth).status_code == 404

    # Shared again, then revoked by the candidate: the employer loses it too.
    assert client.simulate_post(shares, json={"employerId": employer.id}, headers=candidate.auth).status_code == 201
    assert client.simulate_get(f"/api/v1/references/{reference_id}", headers=employer.auth).status_code == 200
    assert client.simulate_post(f"/api/v1/references/{reference_id}/revoke", headers=candidate.auth).status_code == 200
    assert client.simulate_get(f"/api/v1/references/{reference_id}", headers=employer.auth).status_code == 404
    told = [json.loads(e.data)["shared"] for e in replay(redis_client, employer.id, "0-0")]
    assert told == [True, False, True, False]  # shared, unshared, shared again, revoked


def test_a_registered_referrer_sees_requests_to_their_verified_address(client, database):
    candidate = register(client)
    referrer = register(client, role="referrer", email="rita.registered@acme.example")
    accepted = request_reference(client, candidate, referrer={"name": "Rita", "email": "Rita.Registered@acme.example"})
    reference_id = accepted.json["reference"]["id"]
    assert client.simulate_get("/api/v1/references", headers=referrer.auth).json["items"] == []
    with database.transaction() as session:  # through the ORM, so the cached copy of the user is dropped
        user = session.get(User, referrer.id)
        assert user is not None
        user.email_verified = True
    [seen] = client.simulate_get("/api/v1/references", headers=referrer.auth).json["items"]
    assert seen["id"] == reference_id
    assert seen["candidate"]["name"] == "Test User"
    assert seen["answers"] is None and seen["verification"] is None and seen["questions"] is None
    assert seen["referrer"] == {"name": "Rita"}
    assert client.simulate_get(f"/api/v1/references/{reference_id}", headers=referrer.auth).status_code == 200
    filtered = client.simulate_get("/api/v1/references", params={"status": "verified"}, headers=referrer.auth)
    assert filtered.json["items"] == []


def test_listing_pages_through_200_references_with_a_constant_number_of_queries(client, database, connection):
    many, few = register(client), register(client)
    _insert_references(database, many, 200)
    _insert_references(database, few, 2)
    statements: list[str] = []

    def listed(account: Account, cursor: str | None = None) -> dict[str, Any]:
        statements.clear()
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.simulate_get("/api/v1/references", params=params, headers=account.auth)
        assert page.status_code == 200
        return page.json  # type: ignore[no-any-return]

    def record(_conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            statements.append(statement)

    listed(many), listed(few)  # the callers' rows are now in the user cache, as for any repeat caller
    event.listen(connection, "before_cursor_execute", record)
    try:
        first = listed(many)
        first_count = len(statements)
        second = listed(many, first["nextCursor"])
        second_count = len(statements)
        assert len(listed(few)["items"]) == 2
        small_count = len(statements)
    finally:
        event.remove(connection, "before_cursor_execute", record)
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert len(ids) == len(set(ids)) == 200 and second["nextCursor"] is None
    # The page alone, however many references: the candidate of each is the caller.
    assert first_count == second_count == small_count == 1


def _insert_references(database: Database, account: Account, count: int) -> None:
    from domain.references import service
    from domain.references.lifecycle import Visitor
    from domain.references.models import Relationship

    with database.transaction() as session:
        candidate = session.get(User, account.id)
        assert candidate is not None
        for n in range(count):
            draft = service.ReferenceRequest(f"Referee {n}", Relationship.PEER, referrer_email=f"r{n}@x.example")
            reference, _ = service.request_reference(
                session, candidate, draft, Visitor("203.0.113.1", "bench"), link_base="http://t"
            )
            reference.status = ReferenceStatus.EXPIRED  # keep under the open-request limit
            session.flush()


def test_beat_reminds_after_3_and_7_days_then_expires_after_14(client, worker, database, connection):
    candidate = register(client)
    accepted = request_reference(client, candidate)
    reference_id = accepted.json["reference"]["id"]
    worker.drain()
    mails = len(mail_outbox(worker.var_dir))
    link_base = worker.runtime.settings.public_base_url
    now = utcnow()
    assert maintenance.send_automatic_reminders(database, link_base=link_base, now=now + timedelta(days=2)) == 0
    assert (
        maintenance.send_automatic_reminders(database, link_base=link_base, now=now + timedelta(days=3, hours=1)) == 1
    )
    assert (
        maintenance.send_automatic_reminders(database, link_base=link_base, now=now + timedelta(days=3, hours=2)) == 0
    )
    assert (
        maintenance.send_automatic_reminders(database, link_base=link_base, now=now + timedelta(days=7, hours=1)) == 1
    )
    assert maintenance.send_automatic_reminders(database, link_base=link_base, now=now + timedelta(days=9)) == 0
    worker.drain()
    subjects = [m["Subject"] for m in mail_outbox(worker.var_dir)[mails:]]
    assert subjects == ["Reminder: Test User is waiting for your reference"] * 2

    assert maintenance.expire_overdue(database, now=now + timedelta(days=13)) == 0
    assert maintenance.expire_overdue(database, now=now + timedelta(days=14, seconds=1)) == 1
    worker.drain()
    assert mail_outbox(worker.var_dir)[-1]["Subject"] == "Your reference request to Rita Referee has expired"
    shown = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    assert shown["status"] == "expired"
    assert shown["remindersSent"] == 2
    assert client.simulate_get(f"/api/v1/referee/{link_token(worker, -2)}").status_code == 404


def test_a_repeated_delivery_neither_sends_nor_verifies_twice(client, worker, published, connection):
    candidate = register(client)
    accepted = request_reference(client, candidate)
    reference_id = accepted.json["reference"]["id"]
    [send, *_] = [t for t in published if t.queue == "email"]
    worker.drain()
    worker.run(send)
    assert len(mail_outbox(worker.var_dir)) == 1
    token = link_token(worker)
    client.simulate_get(f"/api/v1/referee/{token}", headers=REFEREE_BROWSER)
    _backdate_opening(connection, reference_id)
    assert _submit(client, token).status_code == 202
    [verify] = [t for t in published if t.queue == "ai"]
    worker.drain()
    first = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    worker.run(verify)
    assert worker.drain() == 0  # nothing new was queued (no second notice, no second audit entry)
    assert client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json == first


def test_verifying_twice_in_the_domain_returns_the_first_result(client, worker, database, connection):
    from domain.references import verification

    candidate = register(client)
    reference_id = _completed(client, worker, connection, candidate)
    with database.transaction() as session:
        assert verification.prepare_verification(session, reference_id) is None
    assert worker.drain() == 0


def test_reference_data_is_encrypted_at_rest(client, worker, connection):
    candidate = register(client)
    _completed(client, worker, connection, candidate, referrer={"name": "Zelda Quux", "email": "zelda@quux.example"})
    row = connection.execute(text('SELECT * FROM "references" WHERE candidate_id = :id'), {"id": candidate.id})
    raw = repr(row.mappings().one())
    for plaintext in ("Zelda", "zelda@quux.example", "led the 2024 migration", "198.51.100.7", "referee phone"):
        assert plaintext not in raw
    links = connection.execute(select(text("token_hash")).select_from(text("reference_links"))).all()
    assert links and all(len(link[0]) == 32 for link in links)


def test_referee_links_are_rate_limited_per_link_and_per_client(client, worker, settings):
    candidate = register(client)
    request_reference(client, candidate)
    worker.drain()
    token = link_token(worker)
    per_link = settings.referee_rate_limit_per_minute
    answers = [client.simulate_get(f"/api/v1/referee/{token}") for _ in range(per_link)]
    assert {a.status_code for a in answers} == {200}
    limited = client.simulate_get(f"/api/v1/referee/{token}")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    # Other links from the same client are still answered, up to twice the per-link limit.
    others = [client.simulate_get(f"/api/v1/referee/{n:043d}") for n in range(per_link)]
    assert {a.status_code for a in others} == {404}
    assert client.simulate_get("/api/v1/referee/" + "C" * 43).status_code == 429


def test_revoking_before_delivery_or_verification_stops_them(client, worker, connection):
    candidate = register(client)
    accepted = request_reference(client, candidate)
    reference_id = accepted.json["reference"]["id"]
    assert client.simulate_post(f"/api/v1/references/{reference_id}/revoke", headers=candidate.auth).status_code == 200
    worker.drain()
    assert mail_outbox(worker.var_dir) == []  # the link of a withdrawn request is not sent
    delivery = client.simulate_get(f"/api/v1/operations/{accepted.json['operation']['id']}", headers=candidate.auth)
    assert delivery.json["status"] == "failed"
    assert delivery.json["error"]["message"] == "this reference is revoked; its link is no longer sent"

    accepted = request_reference(client, candidate, referrer={"name": "V", "email": "v@x.example"})
    reference_id = accepted.json["reference"]["id"]
    worker.drain()
    submitted = _submit(client, link_token(worker))
    assert client.simulate_post(f"/api/v1/references/{reference_id}/revoke", headers=candidate.auth).status_code == 200
    worker.drain()
    verify = client.simulate_get(f"/api/v1/operations/{submitted.json['operation']['id']}", headers=candidate.auth)
    assert verify.json["status"] == "failed"
    assert verify.json["error"]["message"] == "this reference is revoked; only a submitted reference is verified"
    shown = client.simulate_get(f"/api/v1/references/{reference_id}", headers=candidate.auth).json
    assert (shown["status"], shown["verification"]) == ("revoked", None)


def test_beat_task_sweeps_references(client, worker, connection):
    from beat.tasks import sweep_references

    candidate = register(client)
    request_reference(client, candidate)
    worker.drain()
    connection.execute(
        text("""UPDATE "references" SET created_at = now() - interval '4 days' WHERE candidate_id = :id"""),
        {"id": candidate.id},
    )
    assert sweep_references.apply().get() == {"reminded": 1, "expired": 0}
    connection.execute(
        text("""UPDATE "references" SET expires_at = now() WHERE candidate_id = :id"""), {"id": candidate.id}
    )
    assert sweep_references.apply().get() == {"reminded": 0, "expired": 1}
