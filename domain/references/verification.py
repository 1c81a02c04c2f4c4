"""Verifying a submitted reference: fraud signals from what the server saw, then an assessment.

Runs on the `ai` queue. A reference is verified once: a redelivered task finds it
completed and returns it as it is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.ai.local import Answer, Assessment
from domain.ai.local import Question as AskedQuestion
from domain.audit import service as audit
from domain.audit.service import Fact, Scalar
from domain.core.db import utcnow
from domain.core.errors import Conflict, NotFound
from domain.references import lifecycle
from domain.references.models import COMPLETED, Reference, ReferenceStatus
from domain.references.referee import questions_of
from domain.references.signals import Evidence, Signal, detect, is_flagged

# How many of the candidate's other answered references the answers are compared with.
COMPARED_REFERENCES = 50
ANSWERED = (ReferenceStatus.SUBMITTED, ReferenceStatus.VERIFIED, ReferenceStatus.FLAGGED)


class Verifier(Protocol):
    """What assesses a reference's answers (the local heuristics, or a language model)."""

    def assess(
        self,
        relationship: str,
        questions: list[AskedQuestion],
        answers: list[Answer],
        signals: list[Signal],
    ) -> Assessment: ...


def verify_reference(session: Session, reference_id: uuid.UUID, verifier: Verifier) -> Reference:
    """Compute the fraud signals and the assessment of a submitted reference, and store them.

    The reference ends `flagged` when the signals are strong, else `verified`; the candidate
    gets a `reference.updated` event and an email, and the outcome is audited. Raises
    NotFound for an unknown reference, Conflict when it was revoked before verification.
    """
    reference = session.get(Reference, reference_id, with_for_update=True)
    if reference is None:
        raise NotFound("reference not found")
    if reference.status in COMPLETED:
        return reference
    if reference.status != ReferenceStatus.SUBMITTED:
        raise Conflict(f"this reference is {reference.status.value}; only a submitted reference is verified")
    signals = detect(gather_evidence(session, reference))
    questions = [AskedQuestion(q.id, q.text, q.kind, q.required) for q in questions_of(reference)]
    answers = [Answer(a["questionId"], a.get("rating"), a.get("text")) for a in reference.response["answers"]]
    assessment = verifier.assess(reference.relation.value, questions, answers, signals)
    reference.verification = {
        **assessment.to_json(),
        "signals": [signal.to_json() for signal in signals],
        "verifiedAt": utcnow().isoformat(),
    }
    outcome = ReferenceStatus.FLAGGED if is_flagged(signals) else ReferenceStatus.VERIFIED
    lifecycle.transition(session, reference, outcome)
    data: dict[str, Scalar] = {
        "score": assessment.score,
        "provider": assessment.provider,
        "signals": ",".join(s.code for s in signals),
    }
    audit.record(session, Fact(f"reference.{outcome.value}", "reference", str(reference.id), data=data))
    lifecycle.notify_candidate(session, reference, "reference_completed", outcome=_outcome_text(outcome, signals))
    return reference


def gather_evidence(session: Session, reference: Reference) -> Evidence:
    """What the server saw of the candidate, the referee and the candidate's other references."""
    consent = reference.request["consent"]
    visits = list((reference.referee or {}).get("visits", []))
    response = reference.response
    visits.append(response["consent"])
    texts = _free_texts(response)
    others = _other_references(session, reference)
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


def _outcome_text(outcome: ReferenceStatus, signals: list[Signal]) -> str:
    if outcome == ReferenceStatus.VERIFIED:
        return "no fraud signals were found."
    return f"it was flagged for review ({len(signals)} fraud signals). Employers you share it with see them too."
