"""Errors the domain raises; the entry points map each kind to a transport status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every expected, user-facing failure."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(DomainError):
    """The request is well-formed but breaks a business rule (422)."""


class AuthenticationFailed(DomainError):
    """Credentials or tokens are missing, wrong, expired or revoked (401)."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this (403)."""


class NotFound(DomainError):
    """The object does not exist or belongs to someone else (404)."""


class Conflict(DomainError):
    """The object's current state does not allow the change (409)."""


class RateLimited(DomainError):
    """Too many requests; `retry_after` seconds until the window reopens (429)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientFault(Exception):
    """A dependency failed in a way that may pass (provider 5xx, timeout): retry later."""


class PermanentFault(Exception):
    """A dependency refused the work for good (provider 4xx): retrying cannot help."""
