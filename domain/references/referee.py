"""What a referee does through their link, without an account: open, answer, decline.

A link is known only by the hash of its token. Unknown, expired, revoked, declined and
already answered links all look the same to `open_questionnaire` (NotFound), so a link
reveals nothing once it no longer works; answering or declining an answered reference is
a Conflict, so a double submit says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.audit import service as audit
from domain.audit.service import Fact, Scalar
from domain.core.crypto import hash_token
from domain.core.db import utcnow
from domain.core.errors import Conflict, InvalidInput, NotFound
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.models import Operation
from domain.references import lifecycle
from domain.references.lifecycle import Visitor
from domain.references.models import AWAITING_REFEREE, Reference, ReferenceLink, ReferenceStatus
from domain.references.questionnaires import MAX_ANSWER_LENGTH, RATING_MAX, RATING_MIN, Question

# Distinct (IP, user agent) pairs remembered per reference, for fraud signals.
MAX_VISITS = 10
ANSWERED = frozenset({ReferenceStatus.SUBMITTED, ReferenceStatus.VERIFIED, ReferenceStatus.FLAGGED})
VERIFY_KIND = "reference.verify"
LINK_NOT_FOUND = "this link is not valid: it may have expired or been withdrawn"


@dataclass(frozen=True)
class AnswerInput:
    question_id: str
    rating: int | None = None
    text: str | None = None


def open_questionnaire(session: Session, token: str, visitor: Visitor) -> tuple[Reference, list[Question]]:
    """Show the referee what to answer; the first visit marks the reference opened.

    Raises NotFound for any link that no longer works.
    """
    reference = _by_token(session, token)
    if reference.status not in AWAITING_REFEREE or _expired(reference):
        raise NotFound(LINK_NOT_FOUND)
    _remember(reference, visitor)
    if reference.status != ReferenceStatus.OPENED:
        lifecycle.transition(session, reference, ReferenceStatus.OPENED)
    return reference, questions_of(reference)


def submit_response(
    session: Session, token: str, answers: list[AnswerInput], visitor: Visitor
) -> tuple[Reference, Operation]:
    """Record the referee's answers and their consent to share; queue the verification.

    Raises InvalidInput (with details per answer) for a missing required answer, an unknown
    or repeated question, or a rating/text that does not fit its question; Conflict when the
    reference was already answered or declined; NotFound for a link that no longer works.
    Queues `reference.verify` on the `ai` queue and an audit entry.
    """
    reference = _usable(session, token, action="answered")
    questions = questions_of(reference)
    _check_answers(questions, answers)
    now = utcnow()
    _remember(reference, visitor)
    reference.response = {
        "answers": [_answer_json(answer) for answer in answers],
        "consent": {"toShare": True, **visitor.seen(now)},
    }
    lifecycle.transition(session, reference, ReferenceStatus.SUBMITTED)
    operation = operations.enqueue(
        session,
        owner_id=reference.candidate_id,
        kind=VERIFY_KIND,
        route=routes.VERIFY_REFERENCE,
        payload={"reference_id": str(reference.id)},
    )
    data: dict[str, Scalar] = {
        "questionnaire": f"{reference.questionnaire}@v{reference.questionnaire_version}",
        "answers": len(answers),
    }
    audit.record(session, Fact("reference.submitted", "reference", str(reference.id), data=data))
    return reference, operation


def decline(session: Session, token: str, reason: str | None, visitor: Visitor) -> Reference:
    """Decline to give the reference; the candidate is told (with the reason, if any).

    Raises Conflict when already answered or declined, NotFound for a link that no longer works.
    """
    reference = _usable(session, token, action="declined")
    _remember(reference, visitor, declineReason=reason)
    lifecycle.transition(session, reference, ReferenceStatus.DECLINED)
    audit.record(session, Fact("reference.declined", "reference", str(reference.id)))
    lifecycle.notify_candidate(
        session, reference, "reference_declined", reason=f" Their reason: {reason}" if reason else ""
    )
    return reference


def questions_of(reference: Reference) -> list[Question]:
    return [Question.of(q) for q in reference.request["questions"]]


def _by_token(session: Session, token: str, *, lock: bool = False) -> Reference:
    query = select(Reference).join(ReferenceLink).where(ReferenceLink.token_hash == hash_token(token))
    reference = session.scalars(query.with_for_update(of=Reference) if lock else query).first()
    if reference is None:
        raise NotFound(LINK_NOT_FOUND)
    return reference


def _usable(session: Session, token: str, *, action: str) -> Reference:
    reference = _by_token(session, token, lock=True)
    if reference.status in ANSWERED:
        raise Conflict(f"this reference was already answered; it cannot be {action} again")
    if reference.status == ReferenceStatus.DECLINED:
        raise Conflict(f"this reference request was declined; it cannot be {action}")
    if reference.status not in AWAITING_REFEREE or _expired(reference):
        raise NotFound(LINK_NOT_FOUND)
    return reference


def _expired(reference: Reference) -> bool:
    return reference.expires_at <= utcnow()


def _remember(reference: Reference, visitor: Visitor, **extra: Any) -> None:
    """Keep what the server saw of the referee (sealed), for the fraud signals.

    Rewritten only when there is something new: a repeated visit costs no write.
    """
    seen = dict(reference.referee or {"visits": []})
    visits: list[dict[str, str]] = list(seen["visits"])
    known = {(v["ip"], v["userAgent"]) for v in visits}
    additions = {k: v for k, v in extra.items() if v is not None}
    new_visitor = (visitor.ip, visitor.user_agent) not in known and len(visits) < MAX_VISITS
    if new_visitor:
        visits.append(visitor.seen(utcnow()))
    if new_visitor or additions:
        reference.referee = {**seen, "visits": visits, **additions}


def _check_answers(questions: list[Question], answers: list[AnswerInput]) -> None:
    by_id = {q.id: q for q in questions}
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, answer in enumerate(answers):
        question = by_id.get(answer.question_id)
        if answer.question_id in seen:
            problems.append(_problem(index, "questionId", "this question is answered twice"))
        elif question is None:
            problems.append(_problem(index, "questionId", "no such question in this questionnaire"))
        else:
            problems += _check_answer(index, question, answer)
        seen.add(answer.question_id)
    missing = [q.id for q in questions if q.required and q.id not in seen]
    problems += [{"field": "answers", "message": f"question {qid} is required"} for qid in missing]
    if problems:
        first = problems[0]
        raise InvalidInput(f"{first['field']}: {first['message']}", details=problems)


def _check_answer(index: int, question: Question, answer: AnswerInput) -> list[dict[str, Any]]:
    if question.kind == "rating":
        if answer.text is not None:
            return [_problem(index, "text", "a rating question takes a rating, not text")]
        if answer.rating is None or not RATING_MIN <= answer.rating <= RATING_MAX:
            return [_problem(index, "rating", f"give a rating from {RATING_MIN} to {RATING_MAX}")]
        return []
    if answer.rating is not None:
        return [_problem(index, "rating", "a text question takes text, not a rating")]
    if not answer.text:
        return [_problem(index, "text", "give a written answer")]
    if len(answer.text) > MAX_ANSWER_LENGTH:
        return [_problem(index, "text", f"at most {MAX_ANSWER_LENGTH} characters")]
    return []


def _problem(index: int, field_name: str, message: str) -> dict[str, Any]:
    return {"field": f"answers.{index}.{field_name}", "message": message}


def _answer_json(answer: AnswerInput) -> dict[str, Any]:
    if answer.rating is not None:
        return {"questionId": answer.question_id, "rating": answer.rating}
    return {"questionId": answer.question_id, "text": answer.text}
