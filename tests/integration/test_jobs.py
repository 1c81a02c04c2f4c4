"""Job postings: an employer's lifecycle, who sees what, search and pagination."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text

from domain.core.db import utcnow
from tests.conftest import Account, register, statements_during, without_savepoints

POSTING = {
    "title": "Senior Python Engineer",
    "description": "Build the backend of an employment-reference platform.",
    "requirements": ["Python", "PostgreSQL"],
    "location": "Berlin",
    "remoteType": "hybrid",
    "salaryRange": {"min": 70000, "max": 90000, "currency": "EUR"},
}


def post_job(client: Any, employer: Account, **overrides: Any) -> dict[str, Any]:
    result = client.simulate_post("/api/v1/jobs", json={**POSTING, **overrides}, headers=employer.auth)
    assert result.status_code == 201, result.text
    return result.json  # type: ignore[no-any-return]


def publish(client: Any, employer: Account, job_id: str) -> dict[str, Any]:
    result = client.simulate_post(f"/api/v1/jobs/{job_id}/publish", headers=employer.auth)
    assert result.status_code == 200, result.text
    return result.json  # type: ignore[no-any-return]


def test_an_employer_writes_publishes_edits_and_closes_a_job(client):
    employer = register(client, role="employer")
    candidate = register(client)
    job = post_job(client, employer)
    assert job["status"] == "draft" and job["postedAt"] is None and job["analysis"] is None
    assert job["employer"] == {"id": employer.id, "name": "Test User"}
    assert job["salaryRange"] == {"min": 70000, "max": 90000, "currency": "EUR"}
    assert client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=candidate.auth).status_code == 404  # a draft

    published = publish(client, employer, job["id"])
    assert published["status"] == "published" and published["postedAt"] is not None
    seen = client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=candidate.auth)
    assert seen.status_code == 200 and seen.json["description"] == POSTING["description"]
    again = client.simulate_post(f"/api/v1/jobs/{job['id']}/publish", headers=employer.auth)
    assert (again.status_code, again.json["message"]) == (409, "this job is published; only a draft can be published")

    edited = client.simulate_patch(
        f"/api/v1/jobs/{job['id']}", json={"title": "Staff Python Engineer", "location": None}, headers=employer.auth
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json["title"], edited.json["location"]) == ("Staff Python Engineer", None)

    closed = client.simulate_post(f"/api/v1/jobs/{job['id']}/close", headers=employer.auth)
    assert closed.json["status"] == "closed"
    frozen = client.simulate_patch(f"/api/v1/jobs/{job['id']}", json={"title": "x"}, headers=employer.auth)
    assert frozen.status_code == 409
    assert client.simulate_post(f"/api/v1/jobs/{job['id']}/close", headers=employer.auth).status_code == 409

    assert client.simulate_delete(f"/api/v1/jobs/{job['id']}", headers=employer.auth).status_code == 204
    assert client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=employer.auth).status_code == 404
    assert client.simulate_delete(f"/api/v1/jobs/{job['id']}", headers=employer.auth).status_code == 404


def test_only_the_owner_changes_a_job_and_only_employers_post(client):
    owner = register(client, role="employer")
    rival = register(client, role="employer")
    candidate = register(client)
    job = post_job(client, owner)
    publish(client, owner, job["id"])
    base = f"/api/v1/jobs/{job['id']}"
    for method, path, body in (
        ("PATCH", base, {"title": "Mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/close", None),
        ("POST", f"{base}/publish", None),
    ):
        assert client.simulate_request(method, path, json=body, headers=rival.auth).status_code == 404, method
        assert client.simulate_request(method, path, json=body, headers=candidate.auth).status_code == 404, method
    assert client.simulate_post("/api/v1/jobs", json=POSTING, headers=candidate.auth).status_code == 404


def test_job_input_is_validated(client):
    employer = register(client, role="employer")
    past = (utcnow() - timedelta(days=1)).isoformat()
    for overrides in (
        {"remoteType": "moon"},
        {"salaryRange": {"min": 90000, "max": 70000, "currency": "EUR"}},
        {"salaryRange": {"min": 1, "max": 2, "currency": "euro"}},
        {"expiresAt": past},
        {"expiresAt": "2030-01-01T00:00:00"},  # no timezone
        {"title": ""},
        {"requirements": [""]},
        {"unknown": 1},
    ):
        result = client.simulate_post("/api/v1/jobs", json={**POSTING, **overrides}, headers=employer.auth)
        assert result.status_code == 422, overrides
    job = post_job(client, employer)
    for body in ({}, {"title": None}, {"remoteType": None}):
        result = client.simulate_patch(f"/api/v1/jobs/{job['id']}", json=body, headers=employer.auth)
        assert result.status_code == 422, body


def test_search_filters_and_pages_published_jobs_plus_ones_own(client, database, connection):
    employer = register(client, role="employer")
    other = register(client, role="employer")
    candidate = register(client)
    titles = ["Python Developer", "Senior Python Engineer", "Data Analyst", "Python Data Engineer"]
    ids = {}
    for n, title in enumerate(titles):
        job = post_job(
            client,
            employer,
            title=title,
            location="Paris" if n % 2 else "Berlin",
            remoteType="remote" if n < 2 else "onsite",
        )
        ids[title] = publish(client, employer, job["id"])["id"]
    draft = post_job(client, other, title="Python Intern")

    def titles_for(account: Account, **params: Any) -> list[str]:
        result = client.simulate_get("/api/v1/jobs", params=params, headers=account.auth)
        assert result.status_code == 200, result.text
        return [item["title"] for item in result.json["items"]]

    assert titles_for(candidate, q="python") == ["Python Data Engineer", "Senior Python Engineer", "Python Developer"]
    assert titles_for(candidate, q='"data engineer"') == ["Python Data Engineer"]
    assert titles_for(candidate, q="python -senior") == ["Python Data Engineer", "Python Developer"]
    assert titles_for(candidate, location="paris") == ["Python Data Engineer", "Senior Python Engineer"]
    assert titles_for(candidate, remoteType="remote") == ["Senior Python Engineer", "Python Developer"]
    assert "Python Intern" in titles_for(other, q="python")  # one's own draft
    assert "Python Intern" not in titles_for(candidate, q="python")
    assert draft["status"] == "draft"

    first = client.simulate_get("/api/v1/jobs", params={"limit": 3}, headers=candidate.auth).json
    second = client.simulate_get(
        "/api/v1/jobs", params={"limit": 3, "cursor": first["nextCursor"]}, headers=candidate.auth
    ).json
    assert len(first["items"]) == 3 and second["nextCursor"] is None
    assert {i["id"] for i in first["items"] + second["items"]} >= set(ids.values())

    client.simulate_get("/api/v1/jobs", headers=candidate.auth)  # the caller is cached now
    statements = without_savepoints(
        statements_during(
            connection, lambda: client.simulate_get("/api/v1/jobs", params={"limit": 100}, headers=candidate.auth)
        )
    )
    assert len(statements) == 1  # the page with its employers, joined


def test_job_text_is_encrypted_at_rest(client, connection):
    employer = register(client, role="employer")
    job = post_job(client, employer)
    row = connection.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job["id"]}).mappings().one()
    raw = repr(row)
    for plaintext in ("employment-reference", "PostgreSQL", "70000"):
        assert plaintext not in raw
    assert row["title"] == POSTING["title"]  # searched and shown to all: kept plain


def test_a_job_past_its_expiry_leaves_the_listing_and_beat_marks_it_expired(client, database, connection, worker):
    from beat.tasks import expire_jobs
    from domain.jobs import service

    employer = register(client, role="employer")
    candidate = register(client)
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    job = publish(client, employer, post_job(client, employer, expiresAt=soon)["id"])
    assert client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=candidate.auth).status_code == 200
    with database.transaction() as session:
        assert service.expire_jobs(session) == 0  # not yet
    connection.execute(
        text("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job["id"]}
    )
    assert client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=candidate.auth).status_code == 404
    assert expire_jobs.apply().get() == 1
    mine = client.simulate_get(f"/api/v1/jobs/{job['id']}", headers=employer.auth).json
    assert mine["status"] == "expired" and mine["closedAt"] is not None
    assert client.simulate_post(f"/api/v1/jobs/{job['id']}/close", headers=employer.auth).status_code == 409
