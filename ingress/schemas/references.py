"""Schemas of the /references and /referee endpoints.

What a reference shows depends on who reads it: its candidate sees everything, an
employer it was shared with sees the answers and the verification but never the
referee's contact details, a registered referrer sees the request addressed to them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import EmailStr, Field, model_validator

from domain.references.models import Reference, ReferenceShare
from domain.references.service import Audience
from domain.users.models import User
from ingress.schemas.ai import CitedSentenceOut, ContradictionOut, ScoredOut
from ingress.schemas.common import PageQuery, RequestModel, ResponseModel
from ingress.schemas.operations import OperationOut
from ingress.schemas.users import PHONE_PATTERN

RelationshipName = Literal["manager", "peer", "direct_report", "client", "academic"]
StatusName = Literal["pending", "sent", "opened", "submitted", "verified", "flagged", "declined", "expired", "revoked"]
ChannelName = Literal["email", "sms"]
QuestionKind = Literal["rating", "text"]


class ReferrerIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, description="E.164, e.g. +14155550100")


class CustomQuestionIn(RequestModel):
    text: str = Field(min_length=5, max_length=500)
    kind: QuestionKind
    required: bool = True


class ReferenceCreate(RequestModel):
    referrer: ReferrerIn
    relationship: RelationshipName
    job_id: uuid.UUID | None = None
    questions: list[CustomQuestionIn] = Field(
        default_factory=list, max_length=5, description="Up to 5 questions of your own, asked after the built-in ones."
    )
    channels: list[ChannelName] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="How to reach the referrer; by default every channel you gave a contact for.",
    )
    consent_to_contact: bool = Field(
        default=True,
        description="Sending the request records your consent (time and IP) to our contacting the referrer.",
    )

    @model_validator(mode="after")
    def _consent_and_distinct_channels(self) -> ReferenceCreate:
        if not self.consent_to_contact:
            raise ValueError("consentToContact: the referrer is contacted only with your consent")
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: name each channel once")
        return self


class ReferenceListQuery(PageQuery):
    status: StatusName | None = Field(default=None, description="Only references in this state.")


class ShareCreate(RequestModel):
    employer_id: uuid.UUID | None = None
    employer_email: EmailStr | None = Field(default=None, max_length=254)

    @model_validator(mode="after")
    def _exactly_one(self) -> ShareCreate:
        if (self.employer_id is None) == (self.employer_email is None):
            raise ValueError("give either employerId or employerEmail")
        return self


class AnswerIn(RequestModel):
    question_id: str = Field(min_length=1, max_length=64)
    rating: int | None = None
    text: str | None = Field(default=None, max_length=5000)


class ResponseIn(RequestModel):
    answers: list[AnswerIn] = Field(min_length=1, max_length=50)
    consent_to_share: Literal[True] = Field(
        description="The referee agrees that the candidate may share this reference with employers."
    )


class DeclineIn(RequestModel):
    reason: str | None = Field(default=None, max_length=1000)


class QuestionOut(ResponseModel):
    id: str
    text: str
    kind: QuestionKind
    required: bool


class AnswerOut(ResponseModel):
    question_id: str
    rating: int | None = None
    text: str | None = None


class SignalOut(ResponseModel):
    code: str
    severity: Literal["strong", "weak"]
    message: str


class VerificationOut(ResponseModel):
    score: int
    summary: str
    sentences: list[CitedSentenceOut] = Field(
        default_factory=list, description="The summary sentence by sentence, each citing the answers it rests on."
    )
    consistency: ScoredOut | None = Field(default=None, description="Do the ratings agree with the written answers.")
    specificity: ScoredOut | None = Field(default=None, description="How concrete the written answers are.")
    contradictions: list[ContradictionOut] = Field(
        default_factory=list, description="Disagreements with the candidate's other referees."
    )
    signals: list[SignalOut]
    provider: str = Field(description='"local": deterministic heuristics, no language model; else the model provider.')
    model: str
    deterministic: bool
    verified_at: datetime


class PersonOut(ResponseModel):
    id: uuid.UUID
    name: str


class ReferrerOut(ResponseModel):
    name: str
    email: str | None = None
    phone: str | None = None


class QuestionnaireOut(ResponseModel):
    name: str
    version: int


class ShareOut(ResponseModel):
    reference_id: uuid.UUID
    employer: PersonOut
    shared_at: datetime

    @classmethod
    def of(cls, share: ReferenceShare, employer: User) -> ShareOut:
        return cls(
            reference_id=share.reference_id,
            employer=PersonOut(id=employer.id, name=employer.name or ""),
            shared_at=share.created_at,
        )


class ReferenceOut(ResponseModel):
    id: uuid.UUID
    status: StatusName
    relationship: RelationshipName
    candidate: PersonOut
    referrer: ReferrerOut
    job_id: uuid.UUID | None
    questionnaire: QuestionnaireOut
    questions: list[QuestionOut] | None
    answers: list[AnswerOut] | None
    verification: VerificationOut | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    opened_at: datetime | None
    submitted_at: datetime | None
    completed_at: datetime | None
    # The candidate's view only:
    channels: list[ChannelName] | None = None
    reminders_sent: int | None = None
    decline_reason: str | None = None
    shares: list[ShareOut] | None = None

    @classmethod
    def of(cls, reference: Reference, audience: Audience, shares: list[ShareOut] | None = None) -> ReferenceOut:
        referrer: dict[str, Any] = reference.referrer
        shown = cls(
            id=reference.id,
            status=reference.status.value,
            relationship=reference.relation.value,
            candidate=PersonOut(id=reference.candidate_id, name=reference.candidate.name or ""),
            referrer=ReferrerOut(name=referrer["name"]),
            job_id=reference.job_id,
            questionnaire=QuestionnaireOut(name=reference.questionnaire, version=reference.questionnaire_version),
            questions=None if audience == "referrer" else reference.request["questions"],
            answers=_answers(reference) if audience != "referrer" else None,
            verification=reference.verification if audience != "referrer" else None,
            created_at=reference.created_at,
            updated_at=reference.updated_at,
            expires_at=reference.expires_at,
            sent_at=reference.sent_at,
            opened_at=reference.opened_at,
            submitted_at=reference.submitted_at,
            completed_at=reference.completed_at,
        )
        if audience == "candidate":
            shown.referrer = ReferrerOut(**referrer)
            shown.channels = list(reference.channels)  # type: ignore[arg-type]
            shown.reminders_sent = reference.reminders_sent + reference.automatic_reminders_sent
            shown.decline_reason = (reference.referee or {}).get("declineReason")
            shown.shares = shares
        return shown

    def to_json(self) -> dict[str, Any]:
        # Fields another audience does not get are left out rather than shown as null.
        data = super().to_json()
        for name in ("channels", "remindersSent", "declineReason", "shares"):
            if data.get(name) is None:
                data.pop(name, None)
        if data["referrer"].get("email") is None and data["referrer"].get("phone") is None:
            data["referrer"] = {"name": data["referrer"]["name"]}
        if data["answers"] is not None:  # each answer carries its rating or its text, not both
            data["answers"] = [{k: v for k, v in answer.items() if v is not None} for answer in data["answers"]]
        return data


def _answers(reference: Reference) -> list[dict[str, Any]] | None:
    response = reference.response
    return None if response is None else list(response["answers"])


class ReferencePage(ResponseModel):
    items: list[ReferenceOut]
    next_cursor: str | None


class ReferenceAccepted(ResponseModel):
    """The reference, and the operation(s) delivering its message (`operation`: the first)."""

    reference: ReferenceOut
    operation: OperationOut
    operations: list[OperationOut]


class RefereeQuestionnaire(ResponseModel):
    candidate: dict[str, str]
    referrer: dict[str, str]
    relationship: RelationshipName
    expires_at: datetime
    questions: list[QuestionOut]
