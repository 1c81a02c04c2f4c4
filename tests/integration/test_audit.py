"""The audit trail: facts recorded on the `audit` queue, a verifiable hash chain, anchors."""

from __future__ import annotations

import itertools
import uuid

import pyotp
from sqlalchemy import text

from domain.audit import service as audit
from domain.audit.service import Fact
from domain.users import service as users
from domain.users.models import User

ENTRIES = "/api/v1/audit/entries"
VERIFY = "/api/v1/audit/verify"


def _record(database, count: int, worker, action: str = "test.fact") -> None:
    # Through the worker's database: its dispatcher publishes what the commit staged.
    with worker.runtime.database.transaction() as session:
        for index in range(count):
            audit.record(session, Fact(action, "thing", f"t-{index}", data={"index": index, "ok": True}))
    worker.drain()


def test_administration_is_recorded_on_the_audit_queue_and_chained(client, admin, account, worker, published):
    changed = client.simulate_patch(
        f"/api/v1/users/{account.id}", json={"status": "suspended", "name": "X"}, headers=admin.auth
    )
    assert changed.status_code == 200
    assert [(t.name, t.queue) for t in published] == [("tasks.audit.append_entry", "audit")]
    worker.drain()
    client.simulate_patch(f"/api/v1/users/{account.id}", json={"status": "active"}, headers=admin.auth)
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


def test_a_redelivered_append_adds_nothing(database, worker, published):
    with worker.runtime.database.transaction() as session:
        audit.record(session, Fact("test.fact", "thing", "t-1"))
    [task] = published
    worker.run(task)
    worker.run(task)
    with database.transaction() as session:
        assert audit.verify(session).entries == 1


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
    import pytest

    from domain.core.errors import InvalidInput

    with database.transaction() as session, pytest.raises(InvalidInput):
        audit.record(session, Fact("test.fact", "thing", "t", data={"ratio": 0.5}))  # type: ignore[dict-item]


def test_a_nul_character_in_input_is_a_422_not_a_database_error(client, admin, account):
    refused = client.simulate_get(ENTRIES, params={"subjectId": "a\x00b"}, headers=admin.auth)
    assert refused.status_code == 422
    assert refused.json["details"][0]["field"] == "subjectId"
    profile = client.simulate_patch("/api/v1/users/me", json={"metadata": {"k": ["ok", "x\x00"]}}, headers=account.auth)
    assert profile.status_code == 422
