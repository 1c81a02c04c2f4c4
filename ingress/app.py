"""The Falcon application factory; `ingress.app:app` is what gunicorn serves."""

from __future__ import annotations

import os
from typing import Any

import falcon
import redis

from domain.core.config import Settings, load_settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.encrypted import install_keyring
from domain.core.events import EventPublisher
from domain.core.logging import configure_logging
from domain.core.ratelimit import RateLimiter
from domain.core.redis import create_redis
from domain.operations.dispatch import Dispatcher, TaskSender
from domain.users.cache import UserCache, track_user_changes
from domain.users.service import Accounts
from domain.verification.models import Channel
from ingress import errors, middleware, openapi
from ingress.context import ApiRequest, Services
from ingress.dispatch import celery_sender
from ingress.offload import cpu_offload
from ingress.resources import (
    ai,
    audit,
    auth,
    job_analysis,
    jobs,
    operations,
    ops,
    referee,
    references,
    users,
    verification,
)

API = "/api/v1"
VERSION = "0.1.0"


def api_routes(services: Services) -> list[tuple[str, object]]:
    """Every route of the service; the OpenAPI document is generated from this list."""
    return [
        ("/healthz", ops.Healthz()),
        ("/readyz", ops.Readyz(services)),
        (f"{API}/auth/register", auth.Register()),
        (f"{API}/auth/login", auth.Login()),
        (f"{API}/auth/refresh", auth.Refresh()),
        (f"{API}/auth/logout", auth.Logout()),
        (f"{API}/auth/mfa/setup", auth.MfaSetup()),
        (f"{API}/auth/mfa/enable", auth.MfaEnable()),
        (f"{API}/auth/mfa/disable", auth.MfaDisable()),
        (f"{API}/users/me", users.Me()),
        (f"{API}/users/me/email-verification", verification.VerificationRequest(Channel.EMAIL)),
        (f"{API}/users/me/email-verification/confirm", verification.VerificationConfirm(Channel.EMAIL)),
        (f"{API}/users/me/phone-verification", verification.VerificationRequest(Channel.PHONE)),
        (f"{API}/users/me/phone-verification/confirm", verification.VerificationConfirm(Channel.PHONE)),
        (f"{API}/users", users.UserList()),
        (f"{API}/users/{{user_id:uuid}}", users.UserItem()),
        (f"{API}/operations", operations.OperationList()),
        (f"{API}/operations/probe", operations.OperationProbe()),
        (f"{API}/operations/{{operation_id:uuid}}", operations.OperationItem()),
        (f"{API}/operations/{{operation_id:uuid}}/cancel", operations.OperationCancel()),
        (f"{API}/jobs", jobs.JobList(services)),
        (f"{API}/jobs/{{job_id:uuid}}", jobs.JobItem()),
        (f"{API}/jobs/{{job_id:uuid}}/publish", jobs.JobPublish()),
        (f"{API}/jobs/{{job_id:uuid}}/close", jobs.JobClose()),
        (f"{API}/jobs/{{job_id:uuid}}/analysis", job_analysis.JobAnalysisRequest()),
        (f"{API}/ai/usage", ai.MyUsage()),
        (f"{API}/admin/ai/usage", ai.AllUsage()),
        (f"{API}/references", references.ReferenceList()),
        (f"{API}/references/{{reference_id:uuid}}", references.ReferenceItem()),
        (f"{API}/references/{{reference_id:uuid}}/reminders", references.ReferenceReminders()),
        (f"{API}/references/{{reference_id:uuid}}/revoke", references.ReferenceRevoke()),
        (f"{API}/references/{{reference_id:uuid}}/verification", references.ReferenceVerification()),
        (f"{API}/references/{{reference_id:uuid}}/shares", references.ReferenceShares()),
        (f"{API}/references/{{reference_id:uuid}}/shares/{{employer_id:uuid}}", references.ReferenceShareItem()),
        (f"{API}/referee/{{token}}", referee.RefereeQuestionnaireResource()),
        (f"{API}/referee/{{token}}/response", referee.RefereeResponse()),
        (f"{API}/referee/{{token}}/decline", referee.RefereeDecline()),
        (f"{API}/events/tickets", operations.EventTickets()),
        (f"{API}/audit/verify", audit.AuditVerify()),
        (f"{API}/audit/entries", audit.AuditEntries()),
    ]


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    redis_client: redis.Redis | None = None,
    task_sender: TaskSender | None = None,
) -> falcon.App[ApiRequest, falcon.Response]:
    """Build the ingress. Tests pass their own database (one transaction per test), Redis and sender."""
    install_keyring(KeyRing(settings.master_key))
    client = redis_client or create_redis(settings)
    database = database or Database.from_settings(settings)
    user_cache = UserCache(client, settings.master_key)
    track_user_changes(database, user_cache)
    Dispatcher(database, task_sender or celery_sender(settings), EventPublisher(client)).install()
    services = Services(
        settings=settings,
        database=database,
        redis=client,
        accounts=Accounts.from_settings(settings, cpu_offload()),
        limiter=RateLimiter(client),
        user_cache=user_cache,
    )
    stack: list[Any] = [middleware.RequestLifecycle(services)]
    if settings.allowed_origins:
        stack.append(
            falcon.CORSMiddleware(
                allow_origins=list(settings.allowed_origins),
                expose_headers=["X-Request-Id", "Retry-After", "Idempotent-Replayed", "RateLimit-Remaining"],
            )
        )
    stack += [middleware.RateLimit(services), middleware.JsonBody(services), middleware.Idempotency()]
    stack.append(middleware.DatabaseSession())
    app = falcon.App(request_type=ApiRequest, middleware=stack)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = True
    errors.install(app)

    routes = api_routes(services)
    for template, resource in routes:
        app.add_route(template, resource)
    app.add_route(f"{API}/openapi.json", openapi.OpenApiDocument(openapi.build_document(routes, VERSION)))
    app.add_route("/docs", openapi.DocsPage())
    app.add_route("/docs/init.js", openapi.DocsInit())
    app.add_route("/metrics", ops.Metrics(services))
    return app


def __getattr__(name: str) -> falcon.App[ApiRequest, falcon.Response]:
    """Build `app` on first access, so importing this module has no side effects."""
    if name == "app":
        configure_logging(os.environ.get("LOG_LEVEL", "info").upper())
        application = create_app(load_settings())
        globals()["app"] = application
        return application
    raise AttributeError(name)
