"""The audit trail: facts recorded as pending rows, drained on the `audit` queue into a verifiable hash chain."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import pyotp
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select, text

from domain.audit import service as audit
from domain.audit.models import AuditEntry, AuditPending
from domain.audit.service import Fact
from domain.core.db import Database, utcnow
from domain.core.errors import InvalidInput
from domain.core.events import EventPublisher
from domain.operations import routes
from domain.operations.dispatch import WAKEUP_DELAY_SECONDS, Dispatcher, OutgoingTask, clear_wakeup, wakeup_key
from domain.operations.models import Operation, OutboxMessage
from domain.users import service as users
from domain.users.models import User
from tasks.app import app as celery_app
from tests.conftest import statements_during, without_savepoints

ENTRIES = "/api/v1/audit/entries"
VERIFY = "/api/v1/audit/verify"
DRAIN = ("tasks.audit.drain", "audit")
WAKEUP_KEY = "deepref:audit:drain-queued"


def _record(database, count: int, worker, action: str = "test.fact") -> None:
    # Through the worker's database: its dispatcher publishes what the commit staged.
    with worker.runtime.database.transaction() as session:
        for index in range(count):
            audit.record(session, Fact(action, "thing", f"t-{index}", data={"index": index, "ok": True}))
    worker.drain()


def _record_one(worker, subject_id: str, request_id: str | None = None, **fact: object) -> None:
    with worker.runtime.database.transaction() as session:
        audit.record(session, Fact("test.fact", "thing", subject_id, **fact), request_id)  # type: ignore[arg-type]


def _chain(database) -> list[AuditEntry]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.sequence)))


def _pending(database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(AuditPending)) or 0


def _beat_drain() -> None:
    """What beat's schedule sends every AUDIT_DRAIN_SECONDS, run as a worker runs it."""
    celery_app.tasks["tasks.audit.drain"].apply()


def test_administration_is_recorded_on_the_audit_queue_and_chained(client, admin, account, worker, published, database):
    changed = client.simulate_patch(
        f"/api/v1/users/{account.id}", json={"status": "suspended", "name": "X"}, headers=admin.auth
    )
    assert changed.status_code == 200
    [wakeup] = published
    assert ((wakeup.name, wakeup.queue), wakeup.kwargs) == (DRAIN, {})
    # Due a moment later, so that facts committed meanwhile join its batch.
    assert wakeup.eta is not None and 0 < (wakeup.eta - utcnow()).total_seconds() <= WAKEUP_DELAY_SECONDS
    assert (_pending(database), _chain(database)) == (1, [])  # recorded, not yet appended
    worker.drain()
    assert _pending(database) == 0
    client.simulate_patch(f"/api/v1/users/{account.id}", json={"status": "active"}, headers=admin.auth)
    assert [(t.name, t.queue) for t in published] == [DRAIN]  # the drain ran: the next fact wakes it again
    worker.drain()

    entries = client.simulate_get(ENTRIES, headers=admin.auth).json["items"]
    assert [e["action"] for e in entries] == ["user.administered", "user.administered"]
    newest, oldest = entries
    assert oldest["subjectType"] == "user" and oldest["subjectId"] == account.id
    assert oldest["actorId"] == admin.id
    assert oldest["data"] == {"changed": "name,status", "role": "job_seeker", "status": "suspended"}
    assert (oldest["sequence"], newest["sequence"]) == (1, 2)
    assert oldest["previousHash"] == "00" * 32
    assert newest["previousHash"] == oldest["hash"]
    verified = client.simulate_get(VERIFY, headers=admin.auth).json
    assert verified == {
        "valid": True,
        "entries": 2,
        "anchors": 0,
        "brokenAt": None,
        "reason": None,
        "head": {"sequence": 2, "hash": newest["hash"]},
    }


def test_recording_a_fact_is_one_insert_and_no_operation(database, worker, connection):
    def record() -> None:
        _record_one(worker, "t-1", actor_id=str(uuid.uuid4()), data={"n": 1})

    statements = without_savepoints(statements_during(connection, record))
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO audit_pending")
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Operation)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_one_wakeup_per_transaction_and_none_while_one_is_queued(database, worker, published, redis_client):
    with worker.runtime.database.transaction() as session:
        for index in range(3):
            audit.record(session, Fact("test.fact", "thing", f"a-{index}"))
    assert [(t.name, t.queue) for t in published] == [DRAIN]
    assert redis_client.ttl(WAKEUP_KEY) > 0  # remembered, and only for a while
    for index in range(4):
        _record_one(worker, f"b-{index}")
    assert len(published) == 1  # the queued wake-up will find these too

    assert worker.drain() == 1
    assert [e.subject_id for e in _chain(database)] == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2", "b-3"]
    assert redis_client.exists(WAKEUP_KEY) == 0
    _record_one(worker, "c-0")
    assert [(t.name, t.queue) for t in published] == [DRAIN]
    worker.drain()
    assert len(_chain(database)) == 8


def test_a_rolled_back_fact_is_neither_kept_nor_announced(database, worker, published):
    with pytest.raises(RuntimeError), worker.runtime.database.transaction() as session:
        audit.record(session, Fact("test.fact", "thing", "t-1"))
        raise RuntimeError("the caller's change failed")
    assert (published, _pending(database)) == ([], 0)


def test_a_redelivered_drain_appends_nothing(database, worker, published):
    _record_one(worker, "t-1")
    [task] = published
    worker.run(task)
    worker.run(task)
    with database.transaction() as session:
        assert audit.verify(session).entries == 1
    assert audit.drain(worker.runtime.database) == 0


def test_a_fact_whose_wakeup_was_lost_is_appended_by_beat(database, worker, published, redis_client):
    _record_one(worker, "t-1")
    published.clear()  # the wake-up never reached a worker
    _record_one(worker, "t-2")
    assert published == [] and _chain(database) == []  # the lost one still holds the others back

    _beat_drain()
    assert [e.subject_id for e in _chain(database)] == ["t-1", "t-2"]
    assert redis_client.exists(WAKEUP_KEY) == 0
    _record_one(worker, "t-3")
    assert [(t.name, t.queue) for t in published] == [DRAIN]


def test_facts_are_chained_in_recording_order_across_batches_and_drains(database, worker, monkeypatch):
    monkeypatch.setattr(audit, "DRAIN_BATCH", 3)
    subjects = [f"t-{n}" for n in (9, 3, 7, 1, 8, 2, 5)]  # not in any order but the recording's
    for subject in subjects:
        _record_one(worker, subject)
    assert audit.drain(worker.runtime.database) == 7
    for subject in ("z-2", "z-1", "z-3"):  # exactly one batch, then an empty one
        _record_one(worker, subject)
    assert audit.drain(worker.runtime.database) == 3

    chain = _chain(database)
    assert [e.sequence for e in chain] == list(range(1, 11))
    assert [e.subject_id for e in chain] == [*subjects, "z-2", "z-1", "z-3"]
    assert [e.recorded_at for e in chain] == sorted(e.recorded_at for e in chain)
    assert _pending(database) == 0
    with database.transaction() as session:
        verified = audit.verify(session)
    assert (verified.valid, verified.entries) == (True, 10)


def test_the_entry_keeps_the_fact_and_the_request_id_outside_its_hash(client, admin, account, worker, database):
    headers = admin.auth | {"X-Request-Id": "req-audit-42"}
    client.simulate_patch(f"/api/v1/users/{account.id}", json={"name": "Renamed"}, headers=headers)
    _record_one(worker, "t-1", actor_id=admin.id, data={"n": 1, "why": None}, request_id="req-explicit")
    worker.drain()
    first, second = _chain(database)
    assert (first.action, first.request_id) == ("user.administered", "req-audit-42")
    assert (second.actor_id, second.data, second.request_id) == (
        uuid.UUID(admin.id),
        {"n": 1, "why": None},
        "req-explicit",
    )
    with database.transaction() as session:
        session.get(AuditEntry, 2).request_id = "changed"  # tracing only: the chain still holds
    with database.transaction() as session:
        assert audit.verify(session).valid is True


def test_the_hash_format_is_unchanged_so_older_chains_still_verify():
    # Computed by the implementation that appended one entry per operation.
    entry = AuditEntry(
        sequence=7,
        recorded_at=datetime(2026, 3, 1, 10, 30, 15, 123456, tzinfo=UTC),
        action="user.administered",
        actor_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        subject_type="user",
        subject_id="abc",
        data={"b": 1, "a": "é", "c": True, "d": None},
        previous_hash=bytes(range(32)),
    )
    assert audit.entry_hash(entry).hex() == "3b15e8149942a6d481f248875fb7c770c16c446a1d956be6b63f2149b44badf1"


def test_without_redis_every_transaction_sends_its_wakeup(connection, worker, database):
    sent: list[OutgoingTask] = []
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    elsewhere = Database(connection)
    Dispatcher(elsewhere, sent.append, EventPublisher(unreachable)).install()
    for subject in ("t-1", "t-2"):
        with elsewhere.transaction() as session:
            audit.record(session, Fact("test.fact", "thing", subject))
    assert [(t.name, t.queue) for t in sent] == [DRAIN, DRAIN]
    clear_wakeup(unreachable, routes.DRAIN_AUDIT)  # logged, not raised: the task goes on
    worker.run(sent[0])
    assert len(_chain(database)) == 2


def test_a_broker_outage_loses_wakeups_not_facts(connection, worker, database, redis_client):
    def broker_down(task: OutgoingTask) -> None:
        raise ConnectionError("broker unreachable")

    elsewhere = Database(connection)
    Dispatcher(elsewhere, broker_down, EventPublisher(redis_client)).install()
    for subject in ("t-1", "t-2"):
        with elsewhere.transaction() as session:
            audit.record(session, Fact("test.fact", "thing", subject))
    assert _pending(database) == 2
    _beat_drain()
    assert [e.subject_id for e in _chain(database)] == ["t-1", "t-2"]


def test_the_wakeup_key_is_named_after_its_task():
    assert wakeup_key(routes.DRAIN_AUDIT) == WAKEUP_KEY


def test_own_account_changes_are_recorded(database, account, worker, published):
    with worker.runtime.database.transaction() as session:
        user = session.get(User, uuid.UUID(account.id))
        secret, _ = users.start_mfa_setup(user)
        users.enable_mfa(user, pyotp.TOTP(secret).now())
    worker.drain()
    with database.transaction() as session:
        [entry] = audit.list_entries(session)[0]
    assert (entry.action, str(entry.actor_id), entry.subject_id) == ("user.mfa_enabled", account.id, account.id)


def test_any_change_to_the_chain_is_found(database, worker, connection):
    _record(database, 4, worker)
    connection.execute(text("UPDATE audit_entries SET data = '{\"index\": 9}' WHERE sequence = 3"))
    with database.transaction() as session:
        result = audit.verify(session)
    assert (result.valid, result.broken_at, result.entries) == (False, 3, 2)
    assert result.reason == "the entry's content does not match its hash"

    connection.execute(text("DELETE FROM audit_entries WHERE sequence = 3"))
    with database.transaction() as session:
        assert audit.verify(session).reason == "entry 3 is missing"


def test_anchors_catch_a_chain_rewritten_from_scratch(database, worker, connection, client, admin):
    _record(database, 3, worker)
    with database.transaction() as session:
        pinned = audit.anchor(session)
        assert pinned is not None and pinned.sequence == 3
        assert audit.anchor(session) is None  # nothing new since
    # An attacker with database access changes entry 2 and recomputes every later hash.
    with database.transaction() as session:
        entries = sorted(audit.list_entries(session, limit=10)[0], key=lambda e: e.sequence)
        entries[1].data = {"index": 99}
        for previous, entry in itertools.pairwise(entries):
            entry.previous_hash = previous.hash
            entry.hash = audit.entry_hash(entry)
    verified = client.simulate_get(VERIFY, headers=admin.auth).json
    assert verified["valid"] is False
    assert verified["entries"] == 3  # every link checks out...
    assert verified["reason"] == "the chain differs from an anchor taken earlier: it was rewritten"

    connection.execute(text("UPDATE audit_anchors SET hash = (SELECT hash FROM audit_entries WHERE sequence = 3)"))
    with database.transaction() as session:
        assert audit.verify(session).reason == "an anchor's MAC is wrong: the anchor was forged or altered"


def test_entries_are_paginated_filtered_and_admin_only(client, admin, account, database, worker):
    _record(database, 3, worker)
    _record(database, 2, worker, action="other.fact")
    first = client.simulate_get(ENTRIES, params={"limit": 2}, headers=admin.auth).json
    second = client.simulate_get(ENTRIES, params={"limit": 2, "cursor": first["nextCursor"]}, headers=admin.auth).json
    third = client.simulate_get(ENTRIES, params={"limit": 2, "cursor": second["nextCursor"]}, headers=admin.auth).json
    sequences = [e["sequence"] for page in (first, second, third) for e in page["items"]]
    assert sequences == [5, 4, 3, 2, 1] and third["nextCursor"] is None
    filtered = client.simulate_get(ENTRIES, params={"action": "other.fact"}, headers=admin.auth).json["items"]
    assert [e["sequence"] for e in filtered] == [5, 4]
    by_subject = client.simulate_get(
        ENTRIES, params={"subjectType": "thing", "subjectId": "t-1"}, headers=admin.auth
    ).json["items"]
    assert [e["subjectId"] for e in by_subject] == ["t-1", "t-1"]
    assert client.simulate_get(ENTRIES, params={"cursor": "nope"}, headers=admin.auth).status_code == 422
    assert client.simulate_get(ENTRIES, headers=account.auth).status_code == 404
    assert client.simulate_get(VERIFY, headers=account.auth).status_code == 404


def test_audit_data_must_be_plain_values(database):
    with database.transaction() as session, pytest.raises(InvalidInput):
        audit.record(session, Fact("test.fact", "thing", "t", data={"ratio": 0.5}))  # type: ignore[dict-item]


def test_a_nul_character_in_input_is_a_422_not_a_database_error(client, admin, account):
    refused = client.simulate_get(ENTRIES, params={"subjectId": "a\x00b"}, headers=admin.auth)
    assert refused.status_code == 422
    assert refused.json["details"][0]["field"] == "subjectId"
    profile = client.simulate_patch("/api/v1/users/me", json={"metadata": {"k": ["ok", "x\x00"]}}, headers=account.auth)
    assert profile.status_code == 422
