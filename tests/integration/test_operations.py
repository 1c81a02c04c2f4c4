"""Operations end to end in one process: accepted by the ingress, run by the task code, seen by the user.

The ingress publishes to a recording sender; the `worker` fixture (conftest.py) delivers
each published task to the real task code (tasks/base.py) on the test's database.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import falcon.testing
from sqlalchemy import select, text, update

from domain.audit import service as audit
from domain.audit.models import AuditEntry, AuditPending
from domain.core.db import Database, utcnow
from domain.core.events import replay
from domain.core.logging import request_id_var
from domain.notifications.providers import TwilioSmsProvider
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.models import Operation, OperationStatus, OutboxMessage
from ingress.app import create_app
from tests.conftest import Account, register, statements_during, without_savepoints
from tests.fakes import FakeTwilio, mail_outbox, sms_outbox

CODE = re.compile(r"\b(\d{6})\b")


def _operation(client: Any, account: Account, operation_id: str) -> dict[str, Any]:
    result = client.simulate_get(f"/api/v1/operations/{operation_id}", headers=account.auth)
    assert result.status_code == 200, result.text
    return result.json  # type: ignore[no-any-return]


def test_email_verification_from_request_to_confirmed_address(
    client, account, worker, published, redis_client, database
):
    accepted = client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    assert accepted.status_code == 202, accepted.text
    operation = accepted.json["operation"]
    assert operation["status"] == "queued"
    assert operation["kind"] == "user.email_verification"
    assert operation["links"] == {"self": f"/api/v1/operations/{operation['id']}", "events": "/events"}
    [task] = published
    assert (task.name, task.queue) == ("tasks.email.deliver_notification", "email")
    assert task.kwargs["operation_id"] == operation["id"]
    assert set(task.kwargs) == {"operation_id", "notification_id"}  # ids only through the broker

    worker.drain()
    done = _operation(client, account, operation["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert done["result"]["status"] == "sent"
    [mail] = mail_outbox(worker.var_dir)
    assert mail["To"] == account.email
    code = CODE.search(mail.get_body(("plain",)).get_content()).group(1)
    assert code in mail.get_body(("html",)).get_content()

    statuses = [e.name + ":" + e.data for e in replay(redis_client, account.id, "0-0")]
    assert [s.split('"status":"')[1].split('"')[0] for s in statuses] == ["running", "succeeded"]

    wrong = "000000" if code != "000000" else "111111"
    refused = client.simulate_post(
        "/api/v1/users/me/email-verification/confirm", json={"code": wrong}, headers=account.auth
    )
    assert refused.status_code == 422
    assert refused.json["message"] == "the code is wrong; 4 attempts left"
    confirmed = client.simulate_post(
        "/api/v1/users/me/email-verification/confirm", json={"code": code}, headers=account.auth
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json["emailVerified"] is True
    # The wrong guess recorded nothing; the confirmation is audited (a wake-up for the audit drain).
    assert [(t.name, t.queue, t.kwargs) for t in published] == [("tasks.audit.drain", "audit", {})]
    worker.drain()
    with database.transaction() as session:
        assert [e.action for e in audit.list_entries(session)[0]] == ["user.email_verified"]
    assert client.simulate_get("/api/v1/users/me", headers=account.auth).json["emailVerified"] is True
    again = client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    assert again.status_code == 409


def test_a_repeated_delivery_sends_the_mail_once(client, account, worker, published):
    client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    [task] = published
    worker.run(task)
    worker.run(task)
    assert len(mail_outbox(worker.var_dir)) == 1


def test_codes_expire_run_out_of_attempts_and_cool_down(client, account, worker, connection):
    confirm = "/api/v1/users/me/email-verification/confirm"
    none_pending = client.simulate_post(confirm, json={"code": "123456"}, headers=account.auth)
    assert none_pending.json["message"] == "no code is pending; ask for a new one"
    assert client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth).status_code == 202
    too_soon = client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    assert too_soon.status_code == 429
    assert int(too_soon.headers["Retry-After"]) > 0
    worker.drain()
    code = CODE.search(mail_outbox(worker.var_dir)[0].get_body(("plain",)).get_content()).group(1)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    messages = [
        client.simulate_post(confirm, json={"code": wrong}, headers=account.auth).json["message"] for _ in range(6)
    ]
    assert messages[3] == "the code is wrong; 1 attempts left"
    assert messages[4] == "the code is wrong; ask for a new one"
    assert messages[5] == "too many wrong codes; ask for a new one"
    assert client.simulate_post(confirm, json={"code": code}, headers=account.auth).status_code == 422

    connection.execute(text("UPDATE verification_codes SET created_at = created_at - interval '2 minutes'"))
    assert client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth).status_code == 202
    worker.drain()
    code = CODE.search(mail_outbox(worker.var_dir)[-1].get_body(("plain",)).get_content()).group(1)
    connection.execute(text("UPDATE verification_codes SET expires_at = now() - interval '1 second'"))
    expired = client.simulate_post(confirm, json={"code": code}, headers=account.auth)
    assert expired.json["message"] == "the code has expired; ask for a new one"
    malformed = client.simulate_post(confirm, json={"code": "12345a"}, headers=account.auth)
    assert malformed.status_code == 422 and malformed.json["details"]


def test_phone_verification_by_sms_and_a_new_number_needs_it_again(client, account, worker, published):
    request = "/api/v1/users/me/phone-verification"
    no_phone = client.simulate_post(request, headers=account.auth)
    assert no_phone.status_code == 422
    assert no_phone.json["message"] == "add a phone number first (PATCH /users/me)"
    client.simulate_patch("/api/v1/users/me", json={"phone": "+14155550100"}, headers=account.auth)
    assert client.simulate_post(request, headers=account.auth).status_code == 202
    assert published[0].queue == "sms"
    worker.drain()
    [sms] = sms_outbox(worker.var_dir)
    assert sms["to"] == "+14155550100"
    code = CODE.search(sms["body"]).group(1)
    confirmed = client.simulate_post(f"{request}/confirm", json={"code": code}, headers=account.auth)
    assert confirmed.json["phoneVerified"] is True
    changed = client.simulate_patch("/api/v1/users/me", json={"phone": "+14155550199"}, headers=account.auth)
    assert changed.json["phoneVerified"] is False


def test_operations_are_listed_paginated_and_private(client, account, worker, connection):
    for _ in range(3):
        connection.execute(text("UPDATE verification_codes SET created_at = created_at - interval '2 minutes'"))
        assert client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth).status_code == 202
    first = client.simulate_get("/api/v1/operations", params={"limit": 2}, headers=account.auth).json
    assert len(first["items"]) == 2 and first["nextCursor"]
    rest = client.simulate_get(
        "/api/v1/operations", params={"limit": 2, "cursor": first["nextCursor"]}, headers=account.auth
    ).json
    assert len(rest["items"]) == 1 and rest["nextCursor"] is None
    ids = [o["id"] for o in first["items"] + rest["items"]]
    assert len(set(ids)) == 3
    queued = client.simulate_get("/api/v1/operations", params={"status": "queued"}, headers=account.auth).json
    assert len(queued["items"]) == 3
    assert (
        client.simulate_get("/api/v1/operations", params={"status": "bogus"}, headers=account.auth).status_code == 422
    )

    stranger = register(client)
    assert client.simulate_get(f"/api/v1/operations/{ids[0]}", headers=stranger.auth).status_code == 404
    assert client.simulate_post(f"/api/v1/operations/{ids[0]}/cancel", headers=stranger.auth).status_code == 404
    assert client.simulate_get("/api/v1/operations", headers=stranger.auth).json["items"] == []
    assert client.simulate_get(f"/api/v1/operations/{uuid.uuid4()}", headers=account.auth).status_code == 404


def test_a_cancelled_operation_is_skipped_by_the_worker(client, account, worker, published):
    operation = client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth).json["operation"]
    cancelled = client.simulate_post(f"/api/v1/operations/{operation['id']}/cancel", headers=account.auth)
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    worker.drain()
    assert mail_outbox(worker.var_dir) == []
    assert _operation(client, account, operation["id"])["status"] == "cancelled"
    again = client.simulate_post(f"/api/v1/operations/{operation['id']}/cancel", headers=account.auth)
    assert again.status_code == 409
    assert again.json["message"] == "only a queued operation can be cancelled; this one is cancelled"


def test_event_tickets_are_issued_to_the_caller(client, account, redis_client):
    from domain.core.events import redeem_ticket

    issued = client.simulate_post("/api/v1/events/tickets", headers=account.auth)
    assert issued.status_code == 201
    assert issued.json["expiresIn"] == 30
    assert redeem_ticket(redis_client, issued.json["ticket"]) == account.id
    assert redeem_ticket(redis_client, issued.json["ticket"]) is None
    assert client.simulate_post("/api/v1/events/tickets").status_code == 401


def test_transient_failures_retry_with_backoff_then_the_operation_dies_and_admins_hear(
    client, account, admin, worker, published, database, settings, fake_twilio
):
    twilio = fake_twilio
    operation_id = _verify_phone_through(twilio, 503, client, account, worker)
    delays = []
    for attempt in range(1, settings.task_max_attempts + 1):
        task = published.pop(0)
        assert task.queue == "sms"
        worker.run(task)
        state = _operation(client, account, operation_id)
        assert state["attempts"] == attempt
        if attempt < settings.task_max_attempts:
            assert state["status"] == "queued"
            assert state["error"]["code"] == "transient_delivery_error"
            assert published[0].eta is not None
            delays.append((published[0].eta - utcnow()).total_seconds())
    assert len(twilio.requests) == settings.task_max_attempts
    dead = _operation(client, account, operation_id)
    assert dead["status"] == "dead"
    assert dead["finishedAt"] is not None
    # Exponential backoff with jitter: each ceiling doubles.
    assert 0.4 < delays[0] <= 1.0 and 1.4 < delays[2] <= 4.0
    [alert] = published
    assert alert.queue == "email"
    worker.drain()
    [mail] = mail_outbox(worker.var_dir)
    assert mail["To"] == admin.email
    assert operation_id in mail["Subject"]
    with database.transaction() as session:
        payloads = session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.operation_id == uuid.UUID(operation_id))
        ).all()
    assert len(payloads) == settings.task_max_attempts
    assert all("notification_id" in p for p in payloads)  # the payload is kept


def _verify_phone_through(twilio: FakeTwilio, failing_status: int, client: Any, account: Account, worker: Any) -> str:
    """Point the worker at a Twilio API that keeps answering `failing_status`; ask for a phone code."""
    worker.runtime.sms = TwilioSmsProvider(
        api_url=twilio.url, account_sid=twilio.account_sid, auth_token=twilio.auth_token, sender="+15550000000"
    )
    twilio.fail_next(failing_status, times=100)
    client.simulate_patch("/api/v1/users/me", json={"phone": "+14155550100"}, headers=account.auth)
    accepted = client.simulate_post("/api/v1/users/me/phone-verification", headers=account.auth)
    return str(accepted.json["operation"]["id"])


def test_a_permanent_refusal_fails_the_operation_without_retry(client, account, worker, published, fake_twilio):
    operation_id = _verify_phone_through(fake_twilio, 400, client, account, worker)
    worker.drain()
    failed = _operation(client, account, operation_id)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "permanent_delivery_error"
    assert published == []


def test_a_broker_outage_still_answers_202_and_leaves_the_task_in_the_outbox(
    settings, redis_client, account, connection
):
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    # The real Celery client, pointed at a port where nothing listens.
    app = create_app(unreachable, database=Database(connection), redis_client=redis_client)
    started = time.monotonic()
    result = falcon.testing.TestClient(app).simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    assert result.status_code == 202
    assert time.monotonic() - started < 5
    unpublished = connection.execute(
        select(OutboxMessage.publish_attempts).where(OutboxMessage.published_at.is_(None))
    ).all()
    assert len(unpublished) == 1


def test_claims_skip_finished_and_leased_operations(database, account, worker):
    from domain.operations import service as operations

    with database.transaction() as session:
        operation = session.get(Operation, _new_operation(session, account))
        operation.status = OperationStatus.RUNNING
        operation.started_at = utcnow()
        operation.attempts = 1
    with database.transaction() as session:
        assert operations.claim(session, operation.id, max_attempts=3, lease_seconds=60).operation is None
        session.execute(
            update(Operation).where(Operation.id == operation.id).values(started_at=utcnow() - timedelta(minutes=5))
        )
    with database.transaction() as session:
        reclaimed = operations.claim(session, operation.id, max_attempts=3, lease_seconds=60)
        assert reclaimed.operation is not None and reclaimed.operation.attempts == 2
        operations.succeed(session, reclaimed.operation, {"ok": True})
    with database.transaction() as session:
        assert operations.claim(session, operation.id, max_attempts=3, lease_seconds=60).operation is None
        assert operations.claim(session, uuid.uuid4(), max_attempts=3, lease_seconds=60).operation is None


def _new_operation(session: Any, account: Account) -> uuid.UUID:
    from domain.operations import routes
    from domain.operations import service as operations

    operation = operations.enqueue(
        session, owner_id=uuid.UUID(account.id), kind="test.kind", route=routes.DELIVER_EMAIL, payload={}
    )
    return operation.id


def test_an_admin_probe_runs_through_the_pipeline_as_a_no_op(client, admin, account, worker, published, redis_client):
    # Admin routes do not exist for anyone else.
    assert client.simulate_post("/api/v1/operations/probe", headers=account.auth).status_code == 404
    accepted = client.simulate_post("/api/v1/operations/probe", headers=admin.auth)
    assert accepted.status_code == 202
    operation = accepted.json["operation"]
    assert operation["kind"] == "system.probe"
    assert [(t.name, t.queue) for t in published] == [("tasks.sync.probe", "sync")]
    worker.drain()
    done = _operation(client, admin, operation["id"])
    assert done["status"] == "succeeded"
    assert done["result"]["queuedSeconds"] >= 0
    assert replay(redis_client, admin.id, "0-0")[-1].name == "operation.updated"


def test_the_worker_marks_its_message_published_so_beat_leaves_it_alone(client, account, worker, published, database):
    from domain.operations import maintenance

    client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    [task] = published
    with database.transaction() as session:
        assert session.get(OutboxMessage, task.id).published_at is None
    worker.drain()
    with database.transaction() as session:
        assert session.get(OutboxMessage, task.id).published_at is not None
    assert maintenance.relay_outbox(database, published.append, grace_seconds=0) == 0


def test_an_operation_keeps_the_id_of_the_request_that_queued_it(database):
    # Services deep in the domain know nothing of requests: the id comes from the context.
    token = request_id_var.set("req-abc-123")
    try:
        with database.transaction() as session:
            operation = operations.enqueue(session, owner_id=None, kind="test.kind", route=routes.PROBE)
    finally:
        request_id_var.reset(token)
    assert operation.request_id == "req-abc-123"


def test_an_audit_fact_keeps_the_id_of_the_request_that_recorded_it(client, admin, account, database, worker):
    headers = admin.auth | {"X-Request-Id": "req-abc-123"}
    client.simulate_patch(f"/api/v1/users/{account.id}", json={"name": "Renamed"}, headers=headers)
    with database.transaction() as session:
        assert session.scalars(select(AuditPending.request_id)).all() == ["req-abc-123"]
    worker.drain()
    with database.transaction() as session:
        assert session.scalars(select(AuditEntry.request_id)).all() == ["req-abc-123"]


def test_reading_ones_operation_is_one_query_outside_any_transaction(client, account, worker, connection):
    accepted = client.simulate_post("/api/v1/users/me/email-verification", headers=account.auth)
    worker.drain()
    operation_id = accepted.json["operation"]["id"]
    _operation(client, account, operation_id)  # the caller's row is now in the user cache
    _list = lambda: client.simulate_get("/api/v1/operations", headers=account.auth)  # noqa: E731
    read = without_savepoints(statements_during(connection, lambda: _operation(client, account, operation_id)))
    listed = without_savepoints(statements_during(connection, _list))
    # The result is sealed with the caller's key, and the caller is already known: no query for the owner.
    assert len(read) == 1 and read[0].startswith("SELECT operations.")
    assert len(listed) == 1 and listed[0].startswith("SELECT operations.")
    assert _operation(client, account, operation_id)["result"]["status"] == "sent"
    assert _list().json["items"][0]["result"]["status"] == "sent"
