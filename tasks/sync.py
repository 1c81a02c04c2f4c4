"""The `sync` queue: pipeline probes (and, with beat, the periodic maintenance in beat/tasks.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from domain.operations import service as operations
from domain.operations.models import Operation
from tasks.app import app
from tasks.base import OperationTask


@app.task(base=OperationTask, name="tasks.sync.probe")
def probe(session: Session, operation: Operation) -> dict[str, Any]:
    return operations.run_probe(operation)
