"""The error envelope, and how every kind of failure is turned into one."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import falcon
import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from domain.core.errors import (
    AuthenticationFailed,
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
)

logger = logging.getLogger("deepref.ingress")

DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 422,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
}
UNAVAILABLE_RETRY_AFTER = "2"


class ApiError(falcon.HTTPError):
    """An HTTP error with the envelope's `message` and optional `details`."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, title=HTTPStatus(status).phrase, description=message, headers=headers)
        self.details = details or []


def envelope(req: falcon.Request, status: int, message: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "message": message,
        "error": HTTPStatus(status).phrase,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "path": req.path,
        "requestId": getattr(req.context, "request_id", None),
        "details": details,
    }


def write_error(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
) -> None:
    """Replace whatever response was being built by an error envelope."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(envelope(req, status, message, details or []))
    resp.media = None
    resp.data = None


def serialize_http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    message = exc.description or HTTPStatus(exc.status_code).phrase
    write_error(req, resp, exc.status_code, message, getattr(exc, "details", None))


def handle_domain_error(req: falcon.Request, resp: falcon.Response, exc: DomainError, params: Any) -> None:
    status = next((code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind)), 400)
    if isinstance(exc, RateLimited):
        resp.set_header("Retry-After", str(exc.retry_after))
    if isinstance(exc, AuthenticationFailed):
        resp.set_header("WWW-Authenticate", 'Bearer realm="deepref"')
    write_error(req, resp, status, exc.message, exc.details)


def handle_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    """A dependency (PostgreSQL, Redis) is unreachable: 503, and the client may retry."""
    logger.error("dependency unavailable: %s", type(exc).__name__, extra={"error": str(exc).splitlines()[0:1]})
    resp.set_header("Retry-After", UNAVAILABLE_RETRY_AFTER)
    write_error(req, resp, 503, "a backing service is temporarily unavailable; retry shortly")


def handle_database_error(req: falcon.Request, resp: falcon.Response, exc: DBAPIError, params: Any) -> None:
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        handle_unavailable(req, resp, exc, params)
    else:
        handle_unexpected(req, resp, exc, params)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    """A bug: log it with its traceback, tell the client nothing about the internals."""
    logger.exception("unhandled error", extra={"request_id": getattr(req.context, "request_id", None)})
    write_error(req, resp, 500, "an unexpected error occurred; it has been logged")


def install(app: falcon.App[Any, Any]) -> None:
    app.set_error_serializer(serialize_http_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(DomainError, handle_domain_error)
    app.add_error_handler(DBAPIError, handle_database_error)
    app.add_error_handler(PoolTimeoutError, handle_unavailable)
    app.add_error_handler(redis.ConnectionError, handle_unavailable)
    app.add_error_handler(redis.TimeoutError, handle_unavailable)
