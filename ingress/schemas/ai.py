"""AI results as the API shows them, and the usage reports."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import Field, model_validator

from domain.ai.usage import UsageTotals
from ingress.schemas.common import PageQuery, ResponseModel


class ScoredOut(ResponseModel):
    score: int
    notes: str


class CitedSentenceOut(ResponseModel):
    text: str
    cites: list[str] = Field(description="Ids of the questions whose answers the sentence rests on.")


class ContradictionOut(ResponseModel):
    reference_id: str
    question_id: str | None = None
    description: str


class SeniorityOut(ResponseModel):
    level: Literal["intern", "junior", "mid", "senior", "lead", "executive", "unspecified"]
    reason: str


class FlaggedWordingOut(ResponseModel):
    phrase: str
    reason: str
    suggestion: str


class JobAnalysisOut(ResponseModel):
    """Shown to the posting's employer only."""

    skills: list[str]
    seniority: SeniorityOut
    clarity: ScoredOut
    exclusionary_wording: list[FlaggedWordingOut]
    missing_salary: bool
    summary: str
    provider: str = Field(description='"local": deterministic heuristics, no language model; else the model provider.')
    model: str
    deterministic: bool
    analysed_at: datetime
    posting_updated_at: datetime = Field(description="updatedAt of the posting as it was analysed.")


# Usage is kept from the service's start; these bounds keep date arithmetic sane.
EARLIEST = date(2000, 1, 1)
LATEST = date(9999, 1, 1)


class UsageQuery(PageQuery):
    from_: date | None = Field(
        default=None, alias="from", ge=EARLIEST, le=LATEST, description="First UTC day (default: 29 days before to)."
    )
    to: date | None = Field(
        default=None, ge=EARLIEST, le=LATEST, description="Last UTC day, included (default: today)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> UsageQuery:
        if self.from_ and self.to and self.from_ > self.to:
            raise ValueError("from must not be after to")
        return self


class AdminUsageQuery(UsageQuery):
    user_id: uuid.UUID | None = Field(default=None, description="Only this user's calls.")


class UsageTotalsOut(ResponseModel):
    model: str
    calls: int
    failed_calls: int = Field(description="Calls without a usable answer (no answer, or invalid JSON).")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float = Field(description="US dollars, to 8 decimal places.")


class DailyUsageOut(UsageTotalsOut):
    day: date

    @classmethod
    def of(cls, totals: UsageTotals) -> DailyUsageOut:
        day, model = totals.key
        return cls(day=day, model=model, **_counts(totals))


class UserUsageOut(UsageTotalsOut):
    user_id: uuid.UUID | None = Field(description="None for calls of users erased since.")

    @classmethod
    def of(cls, totals: UsageTotals) -> UserUsageOut:
        user_id, model = totals.key
        return cls(user_id=None if user_id.int == 0 else user_id, model=model, **_counts(totals))


def _counts(totals: UsageTotals) -> dict[str, int | float]:
    return {
        "calls": totals.calls,
        "failed_calls": totals.failed_calls,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cached_tokens": totals.cached_tokens,
        "reasoning_tokens": totals.reasoning_tokens,
        "cost_usd": round(float(totals.cost_usd), 8),
    }


class DailyUsagePage(ResponseModel):
    items: list[DailyUsageOut]
    next_cursor: str | None
    from_: date = Field(alias="from")
    to: date


class UserUsagePage(ResponseModel):
    items: list[UserUsageOut]
    next_cursor: str | None
    from_: date = Field(alias="from")
    to: date
