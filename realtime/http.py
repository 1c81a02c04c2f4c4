"""The few HTTP pieces the relay needs, without a framework: requests, JSON answers, CORS.

The relay serves one streaming route, so it is a plain WSGI callable rather than a
Falcon app; its errors still use the API's envelope (the same fields as
`ingress/errors.py`) so clients handle both services alike.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
# What an EventSource (or a fetch-based client) sends across origins to the relay.
CORS_ALLOWED_HEADERS = "Authorization, Last-Event-ID, Cache-Control, X-Request-Id"
CORS_MAX_AGE = "600"

Headers = list[tuple[str, str]]


class Request:
    """What the relay reads from a WSGI environ."""

    def __init__(self, environ: WSGIEnvironment) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.path: str = environ.get("PATH_INFO", "") or "/"
        given = self.header("X-Request-Id")
        self.request_id = given if given and REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        self._query = parse_qs(environ.get("QUERY_STRING", ""))

    def header(self, name: str) -> str | None:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    def query(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[0] if values else None


class Refusal(Exception):
    """Answer the request with this status and message in the error envelope."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def base_headers(request: Request, allowed_origins: Iterable[str]) -> Headers:
    """Headers every answer carries: the request id, security headers and CORS (when allowed)."""
    return [("X-Request-Id", request.request_id), *SECURITY_HEADERS, *cors_headers(request, allowed_origins)]


def cors_headers(request: Request, allowed_origins: Iterable[str]) -> Headers:
    origin = request.header("Origin")
    if not origin or origin not in allowed_origins:
        return []
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", "X-Request-Id"),
        ("Vary", "Origin"),
    ]


def preflight_headers(request: Request, allowed_origins: Iterable[str]) -> Headers:
    """The answer to a CORS preflight: nothing for an origin that is not allowed."""
    if not cors_headers(request, allowed_origins):
        return []
    return [
        ("Access-Control-Allow-Methods", "GET, OPTIONS"),
        ("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS),
        ("Access-Control-Max-Age", CORS_MAX_AGE),
    ]


def envelope(request: Request, status: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "message": message,
        "error": HTTPStatus(status).phrase,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "path": request.path,
        "requestId": request.request_id,
        "details": details or [],
    }


def respond_json(start_response: StartResponse, status: int, body: dict[str, Any], headers: Headers) -> list[bytes]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    start_response(
        status_line(status),
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [payload]
