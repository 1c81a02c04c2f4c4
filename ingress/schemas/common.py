"""Shared schema pieces: camelCase models, the error envelope, pagination."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class RequestModel(BaseModel):
    """A request body or query: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", str_strip_whitespace=True
    )


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
