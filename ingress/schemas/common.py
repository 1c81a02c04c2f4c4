"""Shared schema pieces: camelCase models, the error envelope, pagination."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class RequestModel(BaseModel):
    """A request body or query: camelCase names, unknown fields rejected, no NUL characters."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", str_strip_whitespace=True
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL, and no legitimate input contains one.
        if _contains_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    return False


class ResponseModel(BaseModel):
    """A response body, serialised with camelCase names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ErrorDetail(ResponseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorEnvelope(ResponseModel):
    status_code: int
    message: str
    error: str
    timestamp: str
    path: str
    request_id: str | None
    details: list[ErrorDetail | dict[str, Any]]


class PageQuery(RequestModel):
    limit: int = Field(default=20, ge=1, le=100, description="Page size (1-100).")
    cursor: str | None = Field(default=None, max_length=512, description="nextCursor of the previous page.")


class Health(ResponseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
