"""The Redis copy of public job-listing pages: served byte for byte, never stale after a commit."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import text, update

from domain.core.db import utcnow
from domain.core.redis import create_redis
from domain.jobs import service
from domain.jobs.cache import GENERATION_KEY, PAGE_PREFIX, ListingCache, ListingQuery, track_job_changes
from domain.jobs.models import Job
from domain.users.models import User
from ingress.app import create_app
from tests.conftest import Account, register, statements_during
from tests.integration.test_jobs import post_job, publish

JOBS = "/api/v1/jobs"


def listing(client: Any, account: Account, **params: Any) -> Any:
    result = client.simulate_get(JOBS, params=params, headers=account.auth)
    assert result.status_code == 200, result.text
    return result


def titles(result: Any) -> list[str]:
    return [item["title"] for item in result.json["items"]]


def page_keys(redis_client: Any) -> list[bytes]:
    return list(redis_client.scan_iter(f"{PAGE_PREFIX}*"))


def _in(hours: float) -> str:
    return (utcnow() + timedelta(hours=hours)).isoformat()


@pytest.fixture
def employer(client: Any) -> Account:
    return register(client, role="employer")


@pytest.fixture
def candidate(client: Any) -> Account:
    return register(client)


def test_a_repeated_search_is_served_from_redis_byte_for_byte(client, employer, candidate, connection):
    publish(client, employer, post_job(client, employer, title="Python Engineer")["id"])
    first = listing(client, candidate, q="python", location="BERLIN")
    assert first.headers["X-Cache"] == "miss" and titles(first) == ["Python Engineer"]
    second: list[Any] = []
    ran = statements_during(
        connection, lambda: second.append(listing(client, candidate, q="python", location="berlin"))
    )
    assert second[0].headers["X-Cache"] == "hit"
    assert [s for s in ran if not s.startswith(("SAVEPOINT", "RELEASE"))] == []  # PostgreSQL untouched
    assert second[0].content == first.content
    assert second[0].headers["Content-Type"] == first.headers["Content-Type"]
    assert listing(client, candidate, q="python", limit=5).headers["X-Cache"] == "miss"  # another page size


def test_every_change_to_a_public_posting_is_seen_by_the_next_search(client, employer, candidate, database):
    job = post_job(client, employer, title="Data Engineer")
    assert titles(listing(client, candidate)) == []
    assert listing(client, candidate).headers["X-Cache"] == "hit"

    def after(change: Any) -> Any:
        change()
        result = listing(client, candidate)
        assert result.headers["X-Cache"] == "miss"
        assert listing(client, candidate).headers["X-Cache"] == "hit"
        return result

    base = f"{JOBS}/{job['id']}"
    assert titles(after(lambda: publish(client, employer, job["id"]))) == ["Data Engineer"]
    renamed = after(lambda: client.simulate_patch(base, json={"title": "Data Lead"}, headers=employer.auth))
    assert titles(renamed) == ["Data Lead"]
    assert titles(after(lambda: client.simulate_post(f"{base}/close", headers=employer.auth))) == []

    second = publish(client, employer, post_job(client, employer, title="Second")["id"])
    assert titles(after(lambda: client.simulate_delete(f"{JOBS}/{second['id']}", headers=employer.auth))) == []

    publish(client, employer, post_job(client, employer, title="Third", expiresAt=_in(hours=1))["id"])
    assert titles(listing(client, candidate)) == ["Third"]

    def expire() -> None:
        with database.transaction() as session:
            assert service.expire_jobs(session, now=utcnow() + timedelta(hours=2)) == 1

    assert titles(after(expire)) == []


def test_an_employers_name_change_and_bulk_statements_invalidate(client, employer, candidate, admin, database):
    publish(client, employer, post_job(client, employer)["id"])
    assert listing(client, candidate).json["items"][0]["employer"]["name"] == "Test User"
    client.simulate_patch("/api/v1/users/me", json={"name": "Acme"}, headers=employer.auth)
    result = listing(client, candidate)
    assert result.headers["X-Cache"] == "miss" and result.json["items"][0]["employer"]["name"] == "Acme"

    # Demoted and renamed at once: the postings still carry the (new) name.
    body = {"role": "job_seeker", "name": "Former Employer"}
    assert client.simulate_patch(f"/api/v1/users/{employer.id}", json=body, headers=admin.auth).status_code == 200
    assert listing(client, candidate).json["items"][0]["employer"]["name"] == "Former Employer"

    listing(client, candidate)
    with database.transaction() as session:
        session.execute(update(Job).values(title="Bulk Title").execution_options(synchronize_session=False))
    assert titles(listing(client, candidate)) == ["Bulk Title"]

    listing(client, candidate)
    with database.transaction() as session:  # a candidate's change cannot alter a public page
        user = session.get(User, uuid.UUID(candidate.id))
        assert user is not None
        user.name = "Someone Else"
    assert listing(client, candidate).headers["X-Cache"] == "hit"


def test_employer_listings_are_never_cached(client, employer, candidate, redis_client):
    post_job(client, employer, title="My Draft")
    for _ in range(2):
        result = listing(client, employer)
        assert "X-Cache" not in result.headers and titles(result) == ["My Draft"]
    assert page_keys(redis_client) == []
    assert titles(listing(client, candidate)) == []


def test_a_page_with_the_viewers_own_posting_is_not_shared(client, employer, candidate, admin, redis_client):
    post_job(client, employer, title="Kept Draft")
    body = {"role": "job_seeker"}
    assert client.simulate_patch(f"/api/v1/users/{employer.id}", json=body, headers=admin.auth).status_code == 200
    own = listing(client, employer)
    assert own.headers["X-Cache"] == "miss" and titles(own) == ["Kept Draft"]
    assert page_keys(redis_client) == []
    assert titles(listing(client, candidate)) == []


def test_a_page_lives_no_longer_than_its_earliest_expiry(client, employer, candidate, connection, redis_client):
    later = publish(client, employer, post_job(client, employer, title="Lasting")["id"])
    publish(client, employer, post_job(client, employer, title="Leaving")["id"])
    # Raw SQL is not tracked; the page is built after it. The first page shows only "Leaving",
    # the one right after it decides whether there is a next page: its expiry bounds the page.
    expiry = utcnow() + timedelta(seconds=20)
    connection.execute(text("UPDATE jobs SET expires_at = :at WHERE id = :id"), {"at": expiry, "id": later["id"]})
    first = listing(client, candidate, limit=1)
    assert titles(first) == ["Leaving"] and first.json["nextCursor"]
    (key,) = page_keys(redis_client)
    # Redis drops the page when the posting leaves the listing, not after the 30 s TTL.
    assert 10_000 < redis_client.pttl(key) <= 20_000
    assert listing(client, candidate, limit=1).headers["X-Cache"] == "hit"


def test_a_page_lives_at_most_the_configured_time(settings, database, redis_client, candidate, employer, client):
    publish(client, employer, post_job(client, employer)["id"])
    short = settings.model_copy(update={"job_listing_cache_seconds": 5})
    quick = falcon.testing.TestClient(create_app(short, database=database, redis_client=redis_client))
    assert listing(quick, candidate).headers["X-Cache"] == "miss"
    (key,) = page_keys(redis_client)
    assert 0 < redis_client.pttl(key) <= 5_000
    assert listing(quick, candidate).headers["X-Cache"] == "hit"


def test_a_slow_reader_cannot_store_a_page_older_than_a_commit(client, employer, redis_client, database, keyring):
    job = publish(client, employer, post_job(client, employer)["id"])
    cache = ListingCache(redis_client, 30)
    query = ListingQuery(None, None, None, None, 20)
    seen = cache.get(query)
    assert seen.body is None and seen.generation  # the publish started the generation
    # A change committed while the reader was querying.
    with database.transaction() as session:
        owner = session.get(User, uuid.UUID(employer.id))
        assert owner is not None
        service.close_job(session, owner, uuid.UUID(job["id"]))
    assert cache.put(query, b'{"stale":true}', seen.generation, None) is False
    assert cache.get(query).body is None
    current = cache.get(query)
    assert current.generation and cache.put(query, b'{"fresh":true}', current.generation, None) is True
    assert cache.get(query).body == b'{"fresh":true}'
    cache.invalidate()
    assert cache.put(query, b'{"stale":true}', current.generation, None) is False
    assert cache.get(query).body is None
    assert cache.put(query, b"{}", cache.get(query).generation, utcnow() - timedelta(seconds=1)) is False  # expired


def test_the_first_reader_after_a_flush_starts_the_generation(redis_client):
    cache = ListingCache(redis_client, 30)
    query = ListingQuery("q", "Paris", "remote", None, 20)
    assert cache.get(query).generation == ""
    cache.invalidate()  # another process started it meanwhile
    assert cache.put(query, b"{}", "", None) is False
    redis_client.delete(GENERATION_KEY)
    assert cache.put(query, b"{}", "", None) is True
    assert cache.get(ListingQuery("q", "PARIS", "remote", None, 20)).body == b"{}"
    redis_client.delete(GENERATION_KEY)  # evicted: no page is served without its generation
    assert cache.get(query).body is None


def test_redis_unreachable_still_lists(settings, database, caplog):
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    client = falcon.testing.TestClient(create_app(unreachable, database=database))
    employer = register(client, role="employer")
    candidate = register(client)
    publish(client, employer, post_job(client, employer, title="Still Here")["id"])
    assert "job listing cache not invalidated" in caplog.text
    result = listing(client, candidate)
    assert titles(result) == ["Still Here"] and result.headers["X-Cache"] == "miss"

    cache = ListingCache(create_redis(unreachable), 30)
    query = ListingQuery(None, None, None, None, 20)
    assert cache.put(query, b"{}", "0", None) is False  # fails, and starts the back-off
    assert cache.get(query).generation is None


def test_a_zero_ttl_disables_the_cache(settings, database, redis_client, client, employer, candidate):
    publish(client, employer, post_job(client, employer)["id"])
    off = settings.model_copy(update={"job_listing_cache_seconds": 0})
    uncached = falcon.testing.TestClient(create_app(off, database=database, redis_client=redis_client))
    for _ in range(2):
        assert "X-Cache" not in listing(uncached, candidate).headers
    assert page_keys(redis_client) == []
    cache = ListingCache(redis_client, 0)
    assert cache.get(ListingQuery(None, None, None, None, 20)).generation is None
    assert cache.put(ListingQuery(None, None, None, None, 20), b"{}", "", None) is False


def test_list_jobs_is_the_page_the_listing_serves(client, employer, candidate, database):
    for title in ("First", "Second"):
        publish(client, employer, post_job(client, employer, title=title)["id"])
    served = listing(client, candidate, limit=1).json
    with database.transaction() as session:
        viewer = session.get(User, uuid.UUID(candidate.id))
        assert viewer is not None
        page = service.list_jobs(session, viewer, service.JobSearch(), cursor=None, limit=1)
    assert [str(job.id) for job in page.items] == [item["id"] for item in served["items"]]
    assert page.next_cursor == served["nextCursor"]


def test_an_analysis_shows_to_its_employer_only_and_refreshes_public_pages(
    client, worker, employer, candidate, redis_client
):
    # As tasks/runtime.py registers it in every worker (the fixture builds its runtime by hand).
    track_job_changes(worker.runtime.database, ListingCache(redis_client, 30))
    job = publish(client, employer, post_job(client, employer)["id"])
    before = listing(client, candidate).json["items"][0]
    accepted = client.simulate_post(f"{JOBS}/{job['id']}/analysis", headers=employer.auth)
    assert accepted.status_code == 202, accepted.text
    assert listing(client, candidate).headers["X-Cache"] == "hit"  # asking changed nothing yet
    worker.drain()
    after = listing(client, candidate)
    assert after.headers["X-Cache"] == "miss"
    assert after.json["items"][0]["analysis"] is None and after.json["items"][0]["updatedAt"] != before["updatedAt"]
    assert listing(client, employer).json["items"][0]["analysis"]["summary"]
