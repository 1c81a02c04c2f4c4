"""Property-based fuzzing of every documented operation against the served OpenAPI document.

Schemathesis loads `/api/v1/openapi.json` from the in-process WSGI app and generates valid and
invalid requests, one operation per test so each runs in its own rolled-back transaction. Requests
carry a registered user's bearer token, or an admin's on the admin routes. Every response must be
free of 5xx and have a documented status code and content type, a body that matches its schema and
the documented headers.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any, cast

import falcon
import falcon.testing
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from domain.core.config import Settings
from domain.core.db import Database
from domain.operations import routes
from domain.operations import service as operations
from domain.users import service as users
from domain.users.models import Role
from ingress import openapi
from ingress.app import api_routes, create_app
from ingress.context import ApiRequest, Services
from tests.conftest import PASSWORD, Account, register

SCHEMA_PATH = "/api/v1/openapi.json"
EXAMPLES_PER_OPERATION = 50
# CI replays the same examples on every run (a gate must not flip by chance); locally each run explores anew.
DERANDOMIZE = os.environ.get("CI") == "true"
# Test credentials only: failure reports show each request exactly as it was sent.
CONFIG = SchemathesisConfig.from_dict({"output": {"sanitization": {"enabled": False}}})
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Their success needs a current TOTP code, or the code from a message, which the fuzzer cannot produce.
NO_SUCCESS_EXPECTED = frozenset(
    {
        "POST /api/v1/auth/mfa/enable",
        "POST /api/v1/auth/mfa/disable",
        "POST /api/v1/users/me/email-verification/confirm",
        "POST /api/v1/users/me/phone-verification/confirm",
    }
)

App = falcon.App[ApiRequest, falcon.Response]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    auth: bool
    admin: bool
    employer: bool = False  # an employer-only operation

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def documented_operations() -> list[Operation]:
    """The operations the OpenAPI document describes, read from the route list it is generated from."""
    routes = api_routes(cast(Services, None))  # resources only keep the services for later requests
    found = []
    for template, resource in routes:
        for method in openapi.METHODS:
            spec = getattr(getattr(resource, f"on_{method}", None), "__endpoint__", None)
            if spec is not None:
                path = openapi.PARAM.sub(lambda m: "{" + m.group(1) + "}", template)
                employer = spec.roles == (Role.EMPLOYER,)
                found.append(Operation(method.upper(), path, spec.auth, Role.ADMIN in spec.roles, employer))
    return found


OPERATIONS = documented_operations()


@dataclass(frozen=True)
class Actors:
    user: Account  # calls every non-admin operation
    admin: Account  # calls the admin operations
    victim: Account  # a record for the admin to change
    operation_id: str  # one of the user's operations
    references: FuzzReferences  # the user's references, an employer, a referee link
    employer: Account  # calls the employer-only operations
    jobs: FuzzJobs  # the employer's postings


@dataclass(frozen=True)
class FuzzReferences:
    awaiting_id: str  # delivered, waiting for the referee: remind, revoke
    completed_id: str  # verified and shared with `employer_id`
    submitted_id: str  # answered, its verification failed: verify again
    employer_id: str
    token: str  # the referee link of `awaiting_id`
    answers: list[dict[str, Any]]  # a complete, valid answer to its questionnaire


def make_references(database: Database, candidate: Account, employer: Account) -> FuzzReferences:
    """References in the states the reference routes succeed on, made through the domain."""
    from domain.core.crypto import hash_token, new_token
    from domain.core.db import utcnow
    from domain.references import service
    from domain.references.lifecycle import Visitor
    from domain.references.models import ReferenceLink, ReferenceShare, ReferenceStatus, Relationship
    from domain.references.referee import questions_of
    from domain.users.models import User

    token = new_token()
    with database.transaction() as session:
        owner = session.get(User, uuid.UUID(candidate.id))
        assert owner is not None
        made = []
        for name in ("Awaiting", "Completed", "Submitted"):
            draft = service.ReferenceRequest(name, Relationship.PEER, referrer_email=f"{name.lower()}@x.example")
            reference, _ = service.request_reference(
                session, owner, draft, Visitor("203.0.113.9", "fuzz"), link_base=""
            )
            made.append(reference)
        awaiting, completed, submitted = made
        submitted.status = ReferenceStatus.SUBMITTED
        awaiting.status, awaiting.sent_at = ReferenceStatus.SENT, utcnow()
        session.add(ReferenceLink(id=uuid.uuid4(), reference_id=awaiting.id, token_hash=hash_token(token)))
        completed.status = ReferenceStatus.VERIFIED
        session.add(ReferenceShare(id=uuid.uuid4(), reference_id=completed.id, employer_id=uuid.UUID(employer.id)))
        questions = questions_of(awaiting)
        answers = [
            {"questionId": q.id, "rating": 4} if q.kind == "rating" else {"questionId": q.id, "text": "Solid."}
            for q in questions
        ]
        ids = (str(awaiting.id), str(completed.id), str(submitted.id))
        return FuzzReferences(*ids, employer.id, token, answers)


@dataclass(frozen=True)
class FuzzJobs:
    published_id: str
    draft_id: str


def make_jobs(client: falcon.testing.TestClient, employer: Account) -> FuzzJobs:
    body = {"title": "Fuzz Engineer", "description": "Breaks things on purpose.", "remoteType": "remote"}
    made = [client.simulate_post("/api/v1/jobs", json=body, headers=employer.auth).json["id"] for _ in range(2)]
    client.simulate_post(f"/api/v1/jobs/{made[0]}/publish", headers=employer.auth)
    return FuzzJobs(published_id=made[0], draft_id=made[1])


@pytest.fixture
def fuzz_app(settings: Settings, database: Database, redis_client: redis.Redis, published: list[Any]) -> App:
    """The app of the `app` fixture, with rate limits the fuzzer cannot reach."""
    unreachable = 100_000
    relaxed = settings.model_copy(
        update={
            "rate_limit_per_minute": unreachable,
            "login_rate_limit_per_minute": unreachable,
            "referee_rate_limit_per_minute": unreachable,
        }
    )
    return create_app(relaxed, database=database, redis_client=redis_client, task_sender=published.append)


def create_admin(client: falcon.testing.TestClient, settings: Settings, database: Database) -> Account:
    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    with database.transaction() as session:
        admin = users.create_admin(
            session, users.Accounts.from_settings(settings), email=email, password=PASSWORD, name="Fuzz Admin"
        )
        admin_id = str(admin.id)
    result = client.simulate_post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert result.status_code == 200, result.text
    return Account(admin_id, email, result.json["accessToken"], result.json["refreshToken"])


@pytest.fixture
def actors(fuzz_app: App, settings: Settings, database: Database) -> Actors:
    client = falcon.testing.TestClient(fuzz_app)
    user = register(client)
    # A phone to verify, and an operation to read and cancel.
    client.simulate_patch("/api/v1/users/me", json={"phone": "+14155550100"}, headers=user.auth)
    with database.transaction() as session:
        operation = operations.enqueue(session, owner_id=uuid.UUID(user.id), kind="fuzz", route=routes.DELIVER_EMAIL)
    employer = register(client, role="employer")
    return Actors(
        user=user,
        admin=create_admin(client, settings, database),
        victim=register(client),
        operation_id=str(operation.id),
        references=make_references(database, user, employer),
        employer=employer,
        jobs=make_jobs(client, employer),
    )


def known_values(operation: Operation, actors: Actors) -> list[dict[str, Any]]:
    """Fixed request parts that get past "not found" and "bad credentials" to the successful responses."""
    refs = actors.references
    new_account = {"email": f"new-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD, "name": "New"}
    fixed: dict[str, list[dict[str, Any]]] = {
        "POST /api/v1/auth/register": [{"body": {**new_account, "role": "referrer"}}],
        "POST /api/v1/auth/login": [{"body": {"email": actors.victim.email, "password": PASSWORD}}],
        "POST /api/v1/auth/refresh": [{"body": {"refreshToken": actors.user.refresh_token}}],
        "POST /api/v1/auth/logout": [{"body": {"refreshToken": actors.user.refresh_token}}],
        "GET /api/v1/operations/{operation_id}": [{"path_parameters": {"operation_id": actors.operation_id}}],
        "POST /api/v1/operations/{operation_id}/cancel": [{"path_parameters": {"operation_id": actors.operation_id}}],
        "GET /api/v1/jobs/{job_id}": [{"path_parameters": {"job_id": actors.jobs.published_id}}],
        "PATCH /api/v1/jobs/{job_id}": [
            {"path_parameters": {"job_id": actors.jobs.published_id}, "body": {"title": "Renamed"}}
        ],
        "DELETE /api/v1/jobs/{job_id}": [{"path_parameters": {"job_id": actors.jobs.published_id}}],
        "POST /api/v1/jobs/{job_id}/publish": [{"path_parameters": {"job_id": actors.jobs.draft_id}}],
        "POST /api/v1/jobs/{job_id}/close": [{"path_parameters": {"job_id": actors.jobs.published_id}}],
        "POST /api/v1/references": [
            {"body": {"referrer": {"name": "Fuzz Referee", "email": "fuzz@x.example"}, "relationship": "peer"}}
        ],
        "POST /api/v1/references/{reference_id}/verification": [
            {"path_parameters": {"reference_id": refs.submitted_id}}
        ],
        "POST /api/v1/jobs/{job_id}/analysis": [{"path_parameters": {"job_id": actors.jobs.draft_id}}],
        "GET /api/v1/references/{reference_id}": [{"path_parameters": {"reference_id": refs.completed_id}}],
        "POST /api/v1/references/{reference_id}/reminders": [{"path_parameters": {"reference_id": refs.awaiting_id}}],
        "POST /api/v1/references/{reference_id}/revoke": [{"path_parameters": {"reference_id": refs.awaiting_id}}],
        "POST /api/v1/references/{reference_id}/shares": [
            {"path_parameters": {"reference_id": refs.completed_id}, "body": {"employerId": refs.employer_id}}
        ],
        "DELETE /api/v1/references/{reference_id}/shares/{employer_id}": [
            {"path_parameters": {"reference_id": refs.completed_id, "employer_id": refs.employer_id}}
        ],
        "GET /api/v1/referee/{token}": [{"path_parameters": {"token": refs.token}}],
        "POST /api/v1/referee/{token}/response": [
            {"path_parameters": {"token": refs.token}, "body": {"answers": refs.answers, "consentToShare": True}}
        ],
        "POST /api/v1/referee/{token}/decline": [{"path_parameters": {"token": refs.token}}],
        "PATCH /api/v1/users/{user_id}": [
            {"path_parameters": {"user_id": actors.victim.id}},
            {"path_parameters": {"user_id": actors.admin.id}},
        ],
    }
    return fixed.get(operation.label, [])


def cases(api: OpenApiSchema, operation: Operation, actors: Actors) -> st.SearchStrategy[Case[Any]]:
    """Valid and invalid requests for the operation, some of them aimed at the actors' records."""
    documented = api[operation.path][operation.method]
    strategies = [documented.as_strategy(generation_mode=mode) for mode in GenerationMode]
    strategies += [documented.as_strategy(**fixed) for fixed in known_values(operation, actors)]
    return st.one_of(strategies)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_operation_conforms_to_its_openapi_description(fuzz_app: App, actors: Actors, operation: Operation) -> None:
    api = schemathesis.openapi.from_wsgi(SCHEMA_PATH, fuzz_app, config=CONFIG)
    caller = actors.admin if operation.admin else actors.employer if operation.employer else actors.user
    headers = caller.auth if operation.auth else {}
    statuses: set[int] = set()

    # The fixtures are per test, not per example: examples share the test's transaction on purpose.
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=DERANDOMIZE,
    )
    @given(case=cases(api, operation, actors))
    def responses_conform(case: Case[Any]) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses.add(response.status_code)
        # Some invalid requests leave the token out on purpose; one that carries it must not get a 401.
        if operation.auth and response.request.headers.get("Authorization") == headers["Authorization"]:
            assert response.status_code != 401, f"valid credentials refused: {response.text}"

    responses_conform()
    if operation.label not in NO_SUCCESS_EXPECTED:
        assert any(200 <= status < 300 for status in statuses), f"never succeeded, answered only {sorted(statuses)}"


def test_every_documented_operation_is_fuzzed(client: falcon.testing.TestClient) -> None:
    document = client.simulate_get(SCHEMA_PATH).json
    served = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert served == {operation.label for operation in OPERATIONS}
