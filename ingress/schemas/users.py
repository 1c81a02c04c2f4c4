"""Schemas of the /users endpoints."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from domain.users.models import User
from ingress.schemas.common import PageQuery, RequestModel, ResponseModel

MAX_METADATA_BYTES = 4096
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"


class UserOut(ResponseModel):
    id: uuid.UUID
    email: str
    name: str
    role: str
    status: str
    email_verified: bool
    mfa_enabled: bool
    phone: str | None = None
    phone_verified: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email or "",
            name=user.name or "",
            role=user.role.value,
            status=user.status.value,
            email_verified=user.email_verified,
            mfa_enabled=user.mfa_enabled,
            phone=user.phone,
            phone_verified=bool(user.phone_verified),
            metadata=user.profile_metadata or {},
            created_at=user.created_at,
        )


class UserPage(ResponseModel):
    items: list[UserOut]
    next_cursor: str | None


class ProfileUpdate(RequestModel):
    """What a user may change about themselves (role and status are not here)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, description="E.164, e.g. +14155550100")
    metadata: dict[str, Any] | None = Field(default=None, description="Free-form profile data, at most 4 KiB.")

    @field_validator("name")
    @classmethod
    def _name_is_not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("cannot be null")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_is_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes")
        return value


class AdminUserUpdate(RequestModel):
    """Administrators are only made with `deepref create-admin`, never through the API."""

    role: Literal["job_seeker", "employer", "referrer"] | None = None
    status: Literal["active", "suspended"] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)


class UserListQuery(PageQuery):
    role: Literal["job_seeker", "employer", "referrer", "admin"] | None = None
    status: Literal["active", "suspended", "erased"] | None = None
