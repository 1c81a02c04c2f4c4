"""The `ai` queue: verifying submitted references and analysing job postings.

Each task reads what it needs, then commits before the assessment: a language model may
take seconds, and no database transaction, lock or connection is held meanwhile. The
result is stored in a second transaction, with the operation's outcome.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from domain.ai.gateway import Caller
from domain.jobs import analysis
from domain.operations.models import Operation
from domain.references import verification
from domain.references.models import Reference
from tasks.app import app
from tasks.base import OperationTask
from tasks.runtime import runtime


@app.task(base=OperationTask, name="tasks.ai.verify_reference")
def verify_reference(session: Session, operation: Operation, reference_id: str) -> dict[str, Any]:
    submission = verification.prepare_verification(session, uuid.UUID(reference_id))
    if submission is None:  # verified by an earlier delivery
        reference = session.get_one(Reference, uuid.UUID(reference_id))
    else:
        session.commit()
        caller = Caller(submission.candidate_id, operation.id)
        assessment, made_by = runtime().ai.assess_reference(caller, submission.answers)
        reference = verification.complete_verification(session, submission, assessment, made_by)
    return {"referenceId": str(reference.id), "status": reference.status.value}


@app.task(base=OperationTask, name="tasks.ai.analyse_job")
def analyse_job(session: Session, operation: Operation, job_id: str) -> dict[str, Any]:
    read = analysis.read_posting(session, uuid.UUID(job_id))
    session.commit()
    result, made_by = runtime().ai.analyse_job(Caller(read.employer_id, operation.id), read.posting)
    job = analysis.store_analysis(session, read, result, made_by)
    return {"jobId": str(job.id), "provider": made_by.provider, "model": made_by.model}
