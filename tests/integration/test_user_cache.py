"""The Redis copy of user rows: used for authenticated reads, never stale after a commit."""

import uuid

import falcon.testing

from domain.core.redis import create_redis
from domain.users.cache import UserCache
from domain.users.models import User
from ingress.app import create_app
from tests.conftest import register, statements_during

ME = "/api/v1/users/me"


def test_second_read_skips_postgres_and_redis_holds_only_ciphertext(client, connection, redis_client):
    account = register(client, email="cached.person@example.com")
    first = statements_during(connection, lambda: client.simulate_get(ME, headers=account.auth))
    assert any("FROM users" in s for s in first)
    second = statements_during(connection, lambda: client.simulate_get(ME, headers=account.auth))
    assert second == []
    stored = redis_client.get(f"user:{account.id}")
    assert stored and b"cached.person" not in stored and b"Test User" not in stored
    assert client.simulate_get(ME, headers=account.auth).json["email"] == "cached.person@example.com"


def test_changes_are_seen_by_the_next_read(client, admin, redis_client):
    user = register(client)
    assert client.simulate_get(ME, headers=user.auth).status_code == 200
    client.simulate_patch(ME, json={"name": "Changed"}, headers=user.auth)
    assert client.simulate_get(ME, headers=user.auth).json["name"] == "Changed"
    client.simulate_patch(f"/api/v1/users/{user.id}", json={"status": "suspended"}, headers=admin.auth)
    assert redis_client.get(f"user:{user.id}") is None
    assert client.simulate_get(ME, headers=user.auth).status_code == 401


def test_a_load_older_than_a_commit_is_not_stored(database, redis_client, keyring, settings):
    keyring_master = settings.master_key
    cache = UserCache(redis_client, keyring_master)
    user = User(email_index=b"x", email="slow@example.com", name="Slow", role="job_seeker")
    missing, generation = cache.load(user.id)
    assert missing is None and generation == "0"
    cache.invalidate({user.id})  # a change committed while the reader was loading
    cache.store(user, generation)
    assert cache.load(user.id)[0] is None
    _, current = cache.load(user.id)
    cache.store(user, current)
    copy, _ = cache.load(user.id)
    assert copy is not None and copy.email == "slow@example.com" and copy.role == "job_seeker"
    assert (copy.id, copy.status, copy.mfa_enabled, copy.phone) == (user.id, user.status, False, None)


def test_redis_down_reads_fall_back_to_postgres(settings, database, caplog):
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    client = falcon.testing.TestClient(create_app(unreachable, database=database))
    account = register(client)
    assert client.simulate_get(ME, headers=account.auth).json["id"] == account.id
    cache = UserCache(create_redis(unreachable), settings.master_key)
    assert cache.load(uuid.UUID(account.id)) == (None, None)
    cache.invalidate({uuid.UUID(account.id)})
    assert "user cache not invalidated" in caplog.text


def test_a_forged_cache_entry_is_ignored(client, redis_client):
    account = register(client)
    client.simulate_get(ME, headers=account.auth)
    key = f"user:{account.id}"
    stored = redis_client.get(key)
    assert b"password_hash" not in stored
    forged = stored[:32] + stored[32:].replace(b'"role":"job_seeker"', b'"role":"admin"')
    assert forged != stored
    redis_client.set(key, forged)
    assert client.simulate_get("/api/v1/users", headers=account.auth).status_code == 404
    assert client.simulate_get(ME, headers=account.auth).json["role"] == "job_seeker"
