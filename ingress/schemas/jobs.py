"""Schemas of the /jobs endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field, model_validator

from domain.jobs.models import Job
from ingress.schemas.ai import JobAnalysisOut
from ingress.schemas.common import PageQuery, RequestModel, ResponseModel

RemoteTypeName = Literal["onsite", "hybrid", "remote"]
JobStatusName = Literal["draft", "published", "closed", "expired"]


class SalaryRange(RequestModel):
    min: int = Field(ge=0, le=100_000_000)
    max: int = Field(ge=0, le=100_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. EUR")

    @model_validator(mode="after")
    def _ordered(self) -> SalaryRange:
        if self.max < self.min:
            raise ValueError("salaryRange: max must not be below min")
        return self


class JobCreate(RequestModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=20_000)
    requirements: list[str] | None = Field(default=None, max_length=50)
    location: str | None = Field(default=None, min_length=1, max_length=200)
    remote_type: RemoteTypeName
    salary_range: SalaryRange | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _requirements_not_blank(self) -> JobCreate:
        _check_requirements(self.requirements)
        return self


class JobUpdate(RequestModel):
    """Only the fields given change; `null` clears an optional one."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, min_length=1, max_length=20_000)
    requirements: list[str] | None = Field(default=None, max_length=50)
    location: str | None = Field(default=None, min_length=1, max_length=200)
    remote_type: RemoteTypeName | None = None
    salary_range: SalaryRange | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _something_and_required_kept(self) -> JobUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in ("title", "description", "remote_type"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name}: cannot be removed")
        _check_requirements(self.requirements)
        return self

    def changes(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.model_fields_set}
        if data.get("salary_range") is not None:
            data["salary_range"] = self.salary_range.model_dump() if self.salary_range else None
        return data


def _check_requirements(requirements: list[str] | None) -> None:
    for item in requirements or []:
        if not item or len(item) > 500:
            raise ValueError("requirements: each requirement has 1 to 500 characters")


class JobListQuery(PageQuery):
    q: str | None = Field(default=None, min_length=1, max_length=200, description="Words to find in titles.")
    location: str | None = Field(default=None, min_length=1, max_length=200)
    remote_type: RemoteTypeName | None = None


class EmployerOut(ResponseModel):
    id: uuid.UUID
    name: str


class JobOut(ResponseModel):
    id: uuid.UUID
    title: str
    status: JobStatusName
    remote_type: RemoteTypeName
    location: str | None
    employer: EmployerOut
    description: str
    requirements: list[str]
    salary_range: dict[str, Any] | None
    posted_at: datetime | None
    expires_at: datetime | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    analysis: JobAnalysisOut | None = Field(description="The latest AI analysis; shown to the job's employer only.")

    @classmethod
    def of(cls, job: Job, viewer_id: uuid.UUID | None = None) -> JobOut:
        """The job as `viewer_id` sees it (no analysis unless they are its employer)."""
        return cls(
            id=job.id,
            title=job.title,
            status=job.status.value,
            remote_type=job.remote_type.value,
            location=job.location,
            employer=EmployerOut(id=job.employer_id, name=job.employer.name or ""),
            description=job.description,
            requirements=job.requirements or [],
            salary_range=job.salary_range,
            posted_at=job.posted_at,
            expires_at=job.expires_at,
            closed_at=job.closed_at,
            created_at=job.created_at,
            updated_at=job.updated_at,
            analysis=job.analysis if viewer_id == job.employer_id else None,
        )


class JobPage(ResponseModel):
    items: list[JobOut]
    next_cursor: str | None
