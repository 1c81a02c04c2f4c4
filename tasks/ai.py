"""The `ai` queue: verifying submitted references."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from domain.ai.local import LocalVerifier
from domain.operations.models import Operation
from domain.references import verification
from tasks.app import app
from tasks.base import OperationTask


@app.task(base=OperationTask, name="tasks.ai.verify_reference")
def verify_reference(session: Session, operation: Operation, reference_id: str) -> dict[str, Any]:
    reference = verification.verify_reference(session, uuid.UUID(reference_id), LocalVerifier())
    return {"referenceId": str(reference.id), "status": reference.status.value}
