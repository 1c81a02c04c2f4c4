"""The `audit` queue: appending facts to the audit trail's hash chain."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from domain.audit import service as audit
from domain.operations.models import Operation
from tasks.app import app
from tasks.base import OperationTask


@app.task(base=OperationTask, name="tasks.audit.append_entry")
def append_entry(session: Session, operation: Operation, fact: dict[str, Any]) -> dict[str, Any]:
    entry = audit.append(session, fact, operation_id=operation.id)
    return {"sequence": entry.sequence, "hash": entry.hash.hex()}
