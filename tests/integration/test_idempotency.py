"""Idempotency-Key on POST: replay, mismatch, in-flight."""

from datetime import timedelta

import falcon.testing
from sqlalchemy import func, select, text, update

from domain.core.db import utcnow
from domain.idempotency import service as idempotency
from domain.idempotency.models import IdempotencyKey
from domain.users.models import User
from ingress.app import create_app
from tests.conftest import PASSWORD

REGISTER = "/api/v1/auth/register"
BODY = {"email": "ann@example.com", "password": PASSWORD, "role": "job_seeker", "name": "Ann"}


def _user_count(database):
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(User))


def test_repeat_replays_the_first_response_byte_for_byte(client, database):
    headers = {"Idempotency-Key": "signup-1"}
    first = client.simulate_post(REGISTER, json=BODY, headers=headers)
    second = client.simulate_post(REGISTER, json=BODY, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _user_count(database) == 1


def test_same_key_with_another_body_is_422(client):
    headers = {"Idempotency-Key": "signup-2"}
    client.simulate_post(REGISTER, json=BODY, headers=headers)
    other = client.simulate_post(REGISTER, json={**BODY, "name": "Someone Else"}, headers=headers)
    assert other.status_code == 422
    assert "different request" in other.json["message"]


def test_repeat_while_first_is_running_is_409(client, database):
    claim = idempotency.claim(database, "ip:127.0.0.1", "signup-3", idempotency.fingerprint("POST", REGISTER, b"{}"))
    assert isinstance(claim, idempotency.Claimed)
    result = client.simulate_post(
        REGISTER, body=b"{}", headers={"Idempotency-Key": "signup-3", "Content-Type": "application/json"}
    )
    assert result.status_code == 409


def test_keys_are_scoped_to_the_caller(client, database):
    client.simulate_post(REGISTER, json=BODY, headers={"Idempotency-Key": "k"})
    elsewhere = client.simulate_post(REGISTER, json=BODY, headers={"Idempotency-Key": "k"}, remote_addr="203.0.113.7")
    assert elsewhere.status_code == 409  # a genuine second attempt: the email is taken
    assert "Idempotent-Replayed" not in elsewhere.headers


def test_client_errors_are_replayed_but_server_errors_release_the_key(settings, database, redis_client):
    app = create_app(settings, database=database, redis_client=redis_client)
    calls = []

    class Flaky:
        def on_post(self, req, resp):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("transient")
            resp.status = 201
            resp.media = {"attempt": len(calls)}

    app.add_route("/api/v1/flaky", Flaky())
    client = falcon.testing.TestClient(app)
    headers = {"Idempotency-Key": "retry-me", "Content-Type": "application/json"}
    assert client.simulate_post("/api/v1/flaky", body=b"{}", headers=headers).status_code == 500
    retried = client.simulate_post("/api/v1/flaky", body=b"{}", headers=headers)
    assert retried.status_code == 201 and retried.json == {"attempt": 2}
    replayed = client.simulate_post("/api/v1/flaky", body=b"{}", headers=headers)
    assert replayed.json == {"attempt": 2} and len(calls) == 2


def test_expired_and_abandoned_keys_can_be_reused(client, database):
    headers = {"Idempotency-Key": "old"}
    client.simulate_post(REGISTER, json=BODY, headers=headers)
    with database.transaction() as session:
        session.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert idempotency.prune_expired(database) == 1
    fresh = client.simulate_post(REGISTER, json=BODY, headers=headers)
    assert fresh.status_code == 409 and "Idempotent-Replayed" not in fresh.headers

    stale = idempotency.claim(database, "ip:127.0.0.1", "crashed", b"h")
    with database.transaction() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(minutes=5)))
    assert isinstance(idempotency.claim(database, "ip:127.0.0.1", "crashed", b"h"), idempotency.Claimed)
    assert isinstance(stale, idempotency.Claimed)


def test_key_length_is_checked(client):
    result = client.simulate_post(REGISTER, json=BODY, headers={"Idempotency-Key": "x" * 300})
    assert result.status_code == 422


def test_completing_a_pruned_claim_is_harmless(database):
    claim = idempotency.claim(database, "ip:1", "gone", b"h")
    idempotency.release(database, claim.record_id)
    idempotency.complete(database, claim.record_id, 201, {}, b"{}")
    assert isinstance(idempotency.claim(database, "ip:1", "gone", b"h"), idempotency.Claimed)


def test_the_stored_response_commits_with_the_work_or_not_at_all(client, database, connection):
    # Storing the response fails (as a lost connection or a full disk would): the work goes with it.
    connection.execute(
        text(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'disk full'; END $$;"
            "CREATE TRIGGER refuse BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    )
    headers = {"Idempotency-Key": "atomic"}
    failed = client.simulate_post(REGISTER, json=BODY, headers=headers)
    assert failed.status_code == 500 and _user_count(database) == 0  # no account without its replay
    connection.execute(text("DROP TRIGGER refuse ON idempotency_keys"))
    retried = client.simulate_post(REGISTER, json=BODY, headers=headers)  # the key was released
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    replayed = client.simulate_post(REGISTER, json=BODY, headers=headers)
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.content == retried.content
    assert _user_count(database) == 1
