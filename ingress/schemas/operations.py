"""Operations (the job record of every asynchronous request) and event tickets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from domain.operations.models import Operation
from ingress.schemas.common import PageQuery, RequestModel, ResponseModel

OperationStatusName = Literal["queued", "running", "succeeded", "failed", "dead", "cancelled"]


class OperationLinks(ResponseModel):
    self: str
    events: str = "/events"


class OperationError(ResponseModel):
    code: str
    message: str


class OperationOut(ResponseModel):
    id: uuid.UUID
    kind: str
    status: OperationStatusName
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    result: dict[str, Any] | None
    error: OperationError | None
    links: OperationLinks

    @classmethod
    def of(cls, operation: Operation) -> OperationOut:
        return cls(
            id=operation.id,
            kind=operation.kind,
            status=operation.status.value,
            attempts=operation.attempts,
            created_at=operation.created_at,
            started_at=operation.started_at,
            finished_at=operation.finished_at,
            updated_at=operation.updated_at,
            result=operation.result,
            error=operation.error,
            links=OperationLinks(self=f"/api/v1/operations/{operation.id}"),
        )


class Accepted(ResponseModel):
    """The 202 answer of every asynchronous request."""

    operation: OperationOut


class OperationPage(ResponseModel):
    items: list[OperationOut]
    next_cursor: str | None


class OperationListQuery(PageQuery):
    status: OperationStatusName | None = Field(default=None, description="Only operations in this state.")


class TicketOut(ResponseModel):
    ticket: str
    expires_in: int


class CodeConfirmation(RequestModel):
    code: str = Field(pattern=r"^[0-9]{6}$", description="The six-digit code that was sent.")
