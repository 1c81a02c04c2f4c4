"""AI analysis of a job posting: asked for by its employer, made on the `ai` queue.

The analysis (skills, seniority, clarity, exclusionary wording, missing salary) is stored
sealed on the posting, shown to its employer only, and pushed to them as a `job.analysed`
event. Like verification it runs in two steps around the model call, which may take
seconds: `read_posting` only reads, `store_analysis` writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from domain.ai.local_jobs import JobPosting
from domain.ai.schemas import AiResult, JobAnalysis
from domain.core.db import utcnow
from domain.core.errors import Conflict, NotFound
from domain.jobs.models import Job
from domain.jobs.service import EDITABLE, own_job
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.dispatch import stage_event
from domain.operations.models import Operation
from domain.users.models import User

ANALYSE_KIND = "job.analyse"
EVENT = "job.analysed"


@dataclass(frozen=True)
class PostingToAnalyse:
    job_id: uuid.UUID
    employer_id: uuid.UUID
    posting: JobPosting
    # The posting's version the analysis is about.
    updated_at: datetime


def request_analysis(session: Session, employer: User, job_id: uuid.UUID) -> Operation:
    """Queue an analysis of the employer's draft or published posting (`job.analyse` on `ai`).

    Raises NotFound for another employer's or a deleted posting, Conflict once it is closed or expired.
    """
    job = own_job(session, employer, job_id)
    if job.status not in EDITABLE:
        raise Conflict(f"this job is {job.status.value}; only a draft or published job is analysed")
    return operations.enqueue(
        session, owner_id=employer.id, kind=ANALYSE_KIND, route=routes.ANALYSE_JOB, payload={"job_id": str(job.id)}
    )


def read_posting(session: Session, job_id: uuid.UUID) -> PostingToAnalyse:
    """The posting as the analysis sees it; raises NotFound once it is deleted."""
    job = _live(session.get(Job, job_id))
    posting = JobPosting(
        title=job.title,
        description=job.description,
        requirements=tuple(job.requirements or ()),
        location=job.location,
        remote_type=job.remote_type.value,
        salary_range=job.salary_range,
    )
    return PostingToAnalyse(job.id, job.employer_id, posting, job.updated_at)


def store_analysis(session: Session, read: PostingToAnalyse, analysis: JobAnalysis, made_by: AiResult) -> Job:
    """Keep the analysis on the posting and send it to the employer (`job.analysed`).

    Raises NotFound when the posting was deleted meanwhile.
    """
    job = _live(session.get(Job, read.job_id, with_for_update=True, populate_existing=True))
    job.analysis = {
        **analysis.to_json(),
        **made_by.to_json(),
        "analysedAt": utcnow().isoformat(),
        "postingUpdatedAt": read.updated_at.isoformat(),
    }
    stage_event(session, job.employer_id, EVENT, {"jobId": str(job.id), "analysis": job.analysis})
    return job


def _live(job: Job | None) -> Job:
    if job is None or job.deleted_at is not None:
        raise NotFound("job not found")
    return job
