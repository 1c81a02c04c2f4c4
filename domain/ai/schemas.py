"""What each AI feature returns: the JSON a model must produce, validated, and what is stored.

A language model's answer is parsed into these models (camelCase keys, unknown keys
ignored); the local heuristics build the same models, so readers of a result never need
to know which provider made it. What a feature adds on top (which provider and model,
when) is in `AiResult`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Seniority = Literal["intern", "junior", "mid", "senior", "lead", "executive", "unspecified"]


class AiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class Scored(AiModel):
    """A 0..100 score with the reason for it."""

    score: int = Field(ge=0, le=100)
    notes: str = Field(max_length=1000)


class CitedSentence(AiModel):
    """One sentence of a summary, with the ids of the questions whose answers it comes from."""

    text: str = Field(min_length=1, max_length=600)
    cites: list[str] = Field(max_length=20)


class Contradiction(AiModel):
    """Where this referee disagrees with another referee of the same candidate."""

    reference_id: str = Field(max_length=64)
    question_id: str | None = Field(default=None, max_length=64)
    description: str = Field(min_length=1, max_length=600)


class ReferenceAssessment(AiModel):
    """The verdict on one reference's answers.

    `consistency`: do the ratings agree with what the written answers say; `specificity`:
    how concrete the written answers are; `sentences`: the summary, each sentence citing
    the answers (question ids) it rests on; `contradictions`: disagreements with the
    candidate's other referees.
    """

    score: int = Field(ge=0, le=100)
    consistency: Scored
    specificity: Scored
    sentences: list[CitedSentence] = Field(min_length=1, max_length=12)
    contradictions: list[Contradiction] = Field(default_factory=list, max_length=20)

    @property
    def summary(self) -> str:
        return " ".join(sentence.text for sentence in self.sentences)


class SeniorityReading(AiModel):
    level: Seniority
    reason: str = Field(max_length=600)


class FlaggedWording(AiModel):
    """A phrase that may put off or exclude some applicants, and what to write instead."""

    phrase: str = Field(min_length=1, max_length=200)
    reason: str = Field(max_length=600)
    suggestion: str = Field(max_length=600)


class JobAnalysis(AiModel):
    """What a posting asks for and how well it is written."""

    skills: list[str] = Field(max_length=40)
    seniority: SeniorityReading
    clarity: Scored
    exclusionary_wording: list[FlaggedWording] = Field(max_length=40)
    missing_salary: bool
    summary: str = Field(min_length=1, max_length=2000)


class AiResult(AiModel):
    """Who produced a result: `provider` "local" (heuristics, deterministic) or "openrouter"."""

    provider: str
    model: str
    deterministic: bool
