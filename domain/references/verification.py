"""Verifying a submitted reference: fraud signals from what the server saw, then an assessment.

Runs on the `ai` queue in two steps around the assessment, which may take a language
model seconds: `prepare_verification` only reads (the caller may then end its
transaction), `complete_verification` stores the outcome. A reference is verified once:
a redelivered task finds it completed and returns it as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.ai.features import ReferenceAnswers
from domain.ai.local import Answer, OtherReference
from domain.ai.local import Question as AskedQuestion
from domain.ai.schemas import AiResult, ReferenceAssessment
from domain.audit import service as audit
from domain.audit.service import Fact, Scalar
from domain.core.db import utcnow
from domain.core.errors import Conflict, NotFound
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.models import Operation, OperationStatus, OutboxMessage
from domain.references import lifecycle
from domain.references.models import COMPLETED, Reference, ReferenceStatus
from domain.references.referee import VERIFY_KIND, questions_of
from domain.references.service import own_reference
from domain.references.signals import Evidence, Signal, detect, is_flagged
from domain.users.models import User

# How many of the candidate's other answered references the answers are compared with.
COMPARED_REFERENCES = 50
ANSWERED = (ReferenceStatus.SUBMITTED, ReferenceStatus.VERIFIED, ReferenceStatus.FLAGGED)


@dataclass(frozen=True)
class Submission:
    """A submitted reference, read for verification: its fraud signals and what to assess."""

    reference_id: uuid.UUID
    candidate_id: uuid.UUID
    signals: tuple[Signal, ...]
    answers: ReferenceAnswers


def prepare_verification(session: Session, reference_id: uuid.UUID) -> Submission | None:
    """Read a submitted reference and compute its fraud signals; None when it is already verified.

    Changes nothing, so the caller may end its transaction while the assessment is made.
    Raises NotFound for an unknown reference, Conflict when it is not (or no longer) submitted.
    """
    reference = session.get(Reference, reference_id)
    if reference is None:
        raise NotFound("reference not found")
    if reference.status in COMPLETED:
        return None
    _check_submitted(reference)
    others = _other_references(session, reference)
    signals = tuple(detect(gather_evidence(reference, others)))
    answers = ReferenceAnswers(
        relationship=reference.relation.value,
        questions=tuple(AskedQuestion(q.id, q.text, q.kind, q.required) for q in questions_of(reference)),
        answers=_answers(reference.response),
        signals=signals,
        others=tuple(
            OtherReference(str(other.id), other.relation.value, _answers(other.response))
            for other in others
            if other.response is not None
        ),
    )
    return Submission(reference.id, reference.candidate_id, signals, answers)


def complete_verification(
    session: Session, submission: Submission, assessment: ReferenceAssessment, made_by: AiResult
) -> Reference:
    """Store the signals and the assessment; the reference ends `flagged` or `verified`.

    The candidate gets a `reference.updated` event and an email, and the outcome is
    audited. A reference verified meanwhile is returned as it is; raises Conflict when it
    was revoked meanwhile, NotFound when it is gone.
    """
    reference = session.get(Reference, submission.reference_id, with_for_update=True, populate_existing=True)
    if reference is None:
        raise NotFound("reference not found")
    if reference.status in COMPLETED:
        return reference
    _check_submitted(reference)
    signals = submission.signals
    reference.verification = {
        **assessment.to_json(),
        "summary": assessment.summary,
        **made_by.to_json(),
        "signals": [signal.to_json() for signal in signals],
        "verifiedAt": utcnow().isoformat(),
    }
    outcome = ReferenceStatus.FLAGGED if is_flagged(list(signals)) else ReferenceStatus.VERIFIED
    lifecycle.transition(session, reference, outcome)
    data: dict[str, Scalar] = {
        "score": assessment.score,
        "provider": made_by.provider,
        "signals": ",".join(s.code for s in signals),
    }
    audit.record(session, Fact(f"reference.{outcome.value}", "reference", str(reference.id), data=data))
    lifecycle.notify_candidate(session, reference, "reference_completed", outcome=_outcome_text(outcome, signals))
    return reference


def _check_submitted(reference: Reference) -> None:
    if reference.status != ReferenceStatus.SUBMITTED:
        raise Conflict(f"this reference is {reference.status.value}; only a submitted reference is verified")


def _answers(response: dict[str, Any] | None) -> tuple[Answer, ...]:
    answers = (response or {}).get("answers", [])
    return tuple(Answer(a["questionId"], a.get("rating"), a.get("text")) for a in answers)


def gather_evidence(reference: Reference, others: list[Reference]) -> Evidence:
    """What the server saw of the candidate, the referee and the candidate's other references."""
    consent = reference.request["consent"]
    visits = list((reference.referee or {}).get("visits", []))
    response = reference.response
    visits.append(response["consent"])
    texts = _free_texts(response)
    return Evidence(
        candidate_ips=frozenset({consent["ip"]}),
        candidate_user_agents=frozenset({consent["userAgent"]}),
        referee_ips=frozenset(v["ip"] for v in visits),
        referee_user_agents=frozenset(v["userAgent"] for v in visits),
        opened_at=reference.opened_at,
        submitted_at=_submitted_at(reference),
        question_count=len(response["answers"]),
        text_answer_count=len(texts),
        referee_email=reference.referrer.get("email"),
        candidate_email=str(reference.candidate.email or ""),
        duplicate_contacts=_duplicate_contacts(reference, others),
        free_texts=texts,
        other_free_texts=tuple(_free_texts(o.response) for o in others if o.response is not None),
    )


def _other_references(session: Session, reference: Reference) -> list[Reference]:
    """The candidate's other answered references, newest first.

    Only answered ones count: asking the same referee again after an expired or declined
    request is not suspicious, one person answering several times is.
    """
    query = (
        select(Reference)
        .where(Reference.candidate_id == reference.candidate_id, Reference.id != reference.id)
        .where(Reference.status.in_(ANSWERED))
        .order_by(Reference.created_at.desc())
        .limit(COMPARED_REFERENCES)
    )
    return list(session.scalars(query))


def _duplicate_contacts(reference: Reference, others: list[Reference]) -> int:
    def shares_contact(other: Reference) -> bool:
        email = reference.referrer_email_index
        phone = reference.referrer_phone_index
        return (email is not None and other.referrer_email_index == email) or (
            phone is not None and other.referrer_phone_index == phone
        )

    return sum(1 for other in others if shares_contact(other))


def _free_texts(response: dict[str, Any]) -> tuple[str, ...]:
    return tuple(a["text"] for a in response["answers"] if a.get("text"))


def _submitted_at(reference: Reference) -> datetime:
    return reference.submitted_at or utcnow()


def _outcome_text(outcome: ReferenceStatus, signals: tuple[Signal, ...]) -> str:
    if outcome == ReferenceStatus.VERIFIED:
        return "no fraud signals were found."
    return f"it was flagged for review ({len(signals)} fraud signals). Employers you share it with see them too."


def retry_verification(session: Session, candidate: User, reference_id: uuid.UUID) -> Operation:
    """Queue the verification of the candidate's submitted reference again (after a failed one).

    A verification fails for good when the AI limits are used up or the model's answers
    were unusable; the reference then stays `submitted` until this is asked. Raises
    NotFound for another's reference, Conflict unless it is submitted with no
    verification queued or running.
    """
    reference = own_reference(session, candidate, reference_id, lock=True)
    _check_submitted(reference)
    active = (
        select(Operation.id)
        .join(OutboxMessage, OutboxMessage.operation_id == Operation.id)
        .where(Operation.user_id == candidate.id, Operation.kind == VERIFY_KIND)
        .where(Operation.status.in_((OperationStatus.QUEUED, OperationStatus.RUNNING)))
        .where(OutboxMessage.payload["reference_id"].astext == str(reference.id))
    )
    if session.scalars(active.limit(1)).first() is not None:
        raise Conflict("this reference's verification is already queued or running")
    return operations.enqueue(
        session,
        owner_id=candidate.id,
        kind=VERIFY_KIND,
        route=routes.VERIFY_REFERENCE,
        payload={"reference_id": str(reference.id)},
    )
