"""Middleware, in the order it runs: request lifecycle, rate limit, body, idempotency, session."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import falcon
from sqlalchemy.exc import DBAPIError

from domain.core.errors import AuthenticationFailed, RateLimited
from domain.core.logging import request_id_var
from domain.idempotency import service as idempotency
from ingress import metrics
from ingress.context import ApiRequest, Services, client_ip
from ingress.endpoint import endpoint_spec
from ingress.errors import ApiError, handle_database_error, handle_unexpected

access_log = logging.getLogger("deepref.access")

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data:; frame-ancestors 'none'"
)
# Headers a replayed idempotent response keeps.
REPLAYED_HEADERS = ("Content-Type", "Location")


class RequestLifecycle:
    """Request id, client address, caller identity; security headers, metrics, access log."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hsts = services.settings.env == "production"

    def process_request(self, req: ApiRequest, resp: falcon.Response) -> None:
        ctx = req.context
        ctx.started = time.perf_counter()
        ctx.services = self.services
        given = req.get_header("X-Request-Id")
        ctx.request_id = given if given and REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        # Every log line of the request carries its id, and operations it queues keep it.
        ctx.request_id_token = request_id_var.set(ctx.request_id)
        ctx.client_ip = client_ip(
            req.remote_addr, req.get_header("X-Forwarded-For"), self.services.settings.trusted_proxies
        )
        ctx.token_subject = self._token_subject(req)

    def _token_subject(self, req: ApiRequest) -> str | None:
        header = req.get_header("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            req.context.token_error = "Authorization must be 'Bearer <access token>'"
            return None
        try:
            return str(self.services.accounts.access_tokens.subject(token.strip()))
        except AuthenticationFailed as exc:
            req.context.token_error = exc.message
            return None

    def process_response(self, req: ApiRequest, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        ctx = req.context
        resp.set_header("X-Request-Id", ctx.request_id)
        resp.set_headers(SECURITY_HEADERS)
        resp.set_header("Content-Security-Policy", DOCS_CSP if req.path.startswith("/docs") else API_CSP)
        if req.path.startswith("/api/"):
            resp.set_header("Cache-Control", "no-store")
        if self.hsts:
            resp.set_header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        route = req.uri_template or "unmatched"
        status = resp.status_code
        elapsed = time.perf_counter() - getattr(ctx, "started", time.perf_counter())
        metrics.REQUESTS.labels(route, req.method, str(status)).inc()
        metrics.LATENCY.labels(route, req.method).observe(elapsed)
        access_log.info(
            "request",
            extra={
                "request_id": ctx.request_id,
                "method": req.method,
                # The route template, not the path: paths can carry tokens (e.g. referee links).
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client_ip": ctx.client_ip,
                "user_id": ctx.token_subject,
            },
        )
        token = getattr(ctx, "request_id_token", None)
        if token is not None:
            request_id_var.reset(token)


class RateLimit:
    """Per client and route; login is limited further (per IP and per email) by its resource."""

    def __init__(self, services: Services) -> None:
        self.limit = services.settings.rate_limit_per_minute

    def process_resource(self, req: ApiRequest, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
        if req.method == "OPTIONS" or getattr(resource, "rate_limited", True) is False:
            return
        bucket = f"{req.method}:{req.uri_template or 'unmatched'}"
        ctx = req.context
        spec = endpoint_spec(resource, req.method)
        if ctx.token_subject and spec is not None and spec.auth and spec.read_only:
            # The caller's cached row comes back in the same Redis round trip as the count.
            cache = ctx.services.user_cache
            found = enforce(req, resp, bucket, ctx.caller_scope, self.limit, cache.keys(uuid.UUID(ctx.token_subject)))
            if found is not None:
                ctx.prefetched_caller = cache.loaded(found)
            return
        enforce(req, resp, bucket, ctx.caller_scope, self.limit)


def enforce(
    req: ApiRequest,
    resp: falcon.Response,
    bucket: str,
    subject: str,
    limit: int,
    also_get: tuple[str, ...] = (),
) -> list[bytes | None] | None:
    """Count one hit; raise RateLimited (429 with Retry-After) when over `limit` per minute.

    Returns the values of the keys `also_get`, read in the same round trip (None if Redis failed).
    """
    decision, found = req.context.services.limiter.hit_with(bucket, subject, limit, also_get=also_get)
    if decision.degraded:
        metrics.RATE_LIMITER_DEGRADED.inc()
        return None
    resp.set_header("RateLimit-Limit", str(decision.limit))
    resp.set_header("RateLimit-Remaining", str(decision.remaining))
    resp.set_header("RateLimit-Reset", str(decision.reset_after))
    if not decision.allowed:
        raise RateLimited("too many requests; slow down", retry_after=decision.reset_after)
    return found


class JsonBody:
    """JSON only (415), bounded size (413); the raw body is kept for validation and idempotency."""

    def __init__(self, services: Services) -> None:
        self.max_bytes = services.settings.max_body_bytes

    def process_resource(self, req: ApiRequest, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
        if req.method not in BODY_METHODS or resource is None:
            return
        length = req.content_length
        if length is not None and length > self.max_bytes:
            raise ApiError(413, f"request body must be at most {self.max_bytes} bytes")
        body = req.bounded_stream.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise ApiError(413, f"request body must be at most {self.max_bytes} bytes")
        if body and not _is_json(req.content_type):
            raise ApiError(415, "request body must be application/json")
        req.context.body = body


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class Idempotency:
    """`Idempotency-Key` on POST: replay the first response, 422 on another body, 409 meanwhile."""

    def process_resource(self, req: ApiRequest, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
        key = req.get_header("Idempotency-Key")
        if req.method != "POST" or key is None or resource is None:
            return
        ctx = req.context
        request_hash = idempotency.fingerprint(req.method, req.relative_uri, ctx.body)
        outcome = idempotency.claim(ctx.services.database, ctx.caller_scope, key, request_hash)
        if isinstance(outcome, idempotency.Replay):
            resp.status = outcome.status
            for name, value in outcome.headers.items():
                resp.set_header(name, value)
            resp.set_header("Idempotent-Replayed", "true")
            resp.data = outcome.body
            resp.complete = True  # skip the responder
            return
        ctx.idempotency_record = outcome.record_id

    def process_response(self, req: ApiRequest, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        """Runs after DatabaseSession's: a success was stored with the work; settle anything else."""
        ctx = req.context
        record_id = ctx.idempotency_record
        if record_id is None:
            return
        database = ctx.services.database
        if resp.status_code >= 500 or resp.status_code == 429:  # the commit's failure included
            idempotency.release(database, record_id)
        elif not ctx.idempotency_stored:  # a client error, or a success that wrote nothing
            idempotency.complete(database, record_id, *replayable(resp))


def replayable(resp: falcon.Response) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body an Idempotency-Key repeat gets back."""
    headers = {name: value for name in REPLAYED_HEADERS if (value := resp.get_header(name)) is not None}
    headers.setdefault("Content-Type", resp.content_type or falcon.MEDIA_JSON)
    return resp.status_code, headers, resp.render_body() or b""


class DatabaseSession:
    """One session per request: committed when the request succeeded, else rolled back.

    A success's Idempotency-Key response is stored in the same transaction: a repeat replays
    exactly the work that was committed, and a failed commit leaves neither behind.
    """

    def process_response(self, req: ApiRequest, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        ctx = req.context
        if not ctx.has_session:
            return
        commit = req_succeeded and resp.status_code < 400
        try:
            if commit and ctx.idempotency_record is not None:
                idempotency.record_response(ctx.session, ctx.idempotency_record, *replayable(resp))
                ctx.idempotency_stored = True
            ctx.close_session(commit=commit)
        except Exception as exc:  # the commit failed: the client must not see the success
            if isinstance(exc, DBAPIError):
                handle_database_error(req, resp, exc, {})
            else:
                handle_unexpected(req, resp, exc, {})
