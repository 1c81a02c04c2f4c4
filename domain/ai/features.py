"""The AI features: reference verification and job posting analysis.

Each runs on the configured provider: `AI_PROVIDER=local` (the embedded default) uses the
deterministic heuristics of `local.py` / `local_jobs.py`, no network; `openrouter` asks a
language model through the gateway. Either way the result has the same shape, says which
provider and model made it, and the call is recorded in `ai_usage`. The per-user limits
apply to language-model calls (the local heuristics cost nothing and call no one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from domain.ai.breaker import CircuitBreaker
from domain.ai.gateway import Caller, Feature, Gateway, UsageLedger
from domain.ai.limits import UsageLimits
from domain.ai.local import Answer, LocalVerifier, OtherReference, Question
from domain.ai.local_jobs import JobPosting, LocalJobAnalyzer
from domain.ai.openrouter import OpenRouterClient
from domain.ai.schemas import AiResult, JobAnalysis, ReferenceAssessment
from domain.core.config import Settings
from domain.core.db import Database
from domain.references.signals import Signal

REFERENCE_VERIFICATION = Feature("reference_verification", "reference_verification", 1, ReferenceAssessment, 1500)
JOB_ANALYSIS = Feature("job_analysis", "job_analysis", 1, JobAnalysis, 1500)
# Bounds on what one prompt carries about other referees.
OTHER_REFERENCES = 3
OTHER_ANSWER_CHARS = 1000


@dataclass(frozen=True)
class ReferenceAnswers:
    """One referee's answers and what the model needs around them."""

    relationship: str
    questions: tuple[Question, ...]
    answers: tuple[Answer, ...]
    signals: tuple[Signal, ...]
    others: tuple[OtherReference, ...] = ()


class AiFeatures:
    """The features, on the local heuristics (`gateway` None) or on a language model."""

    def __init__(self, gateway: Gateway | None, ledger: UsageLedger) -> None:
        self.gateway = gateway
        self.ledger = ledger

    def assess_reference(self, caller: Caller, subject: ReferenceAnswers) -> tuple[ReferenceAssessment, AiResult]:
        """Score and summarise a reference's answers.

        Raises AiLimitExceeded, AiOutputInvalid, ModelUnavailable or ModelRefused (language model only).
        """
        if self.gateway is None:
            verifier = LocalVerifier()
            started = time.perf_counter()
            assessment = verifier.assess(
                subject.relationship, subject.questions, subject.answers, subject.signals, subject.others
            )
            self._record_local(REFERENCE_VERIFICATION, caller, verifier.model, started)
            return assessment, AiResult(provider=verifier.provider, model=verifier.model, deterministic=True)
        answered = self.gateway.complete(
            REFERENCE_VERIFICATION, _reference_values(subject), caller, lambda value: _check_citations(value, subject)
        )
        return answered.value, AiResult(provider=self.gateway.provider.name, model=answered.model, deterministic=False)

    def analyse_job(self, caller: Caller, posting: JobPosting) -> tuple[JobAnalysis, AiResult]:
        """Analyse a job posting: skills, seniority, clarity, exclusionary wording, salary.

        Raises AiLimitExceeded, AiOutputInvalid, ModelUnavailable or ModelRefused (language model only).
        """
        if self.gateway is None:
            analyzer = LocalJobAnalyzer()
            started = time.perf_counter()
            analysis = analyzer.analyse(posting)
            self._record_local(JOB_ANALYSIS, caller, analyzer.model, started)
            return analysis, AiResult(provider=analyzer.provider, model=analyzer.model, deterministic=True)
        answered = self.gateway.complete(
            JOB_ANALYSIS, {"posting": _posting_values(posting)}, caller, lambda value: _check_quotes(value, posting)
        )
        # Whether a salary is given is a fact we know; the model does not get to decide it.
        analysis = answered.value.model_copy(update={"missing_salary": posting.salary_range is None})
        return analysis, AiResult(provider=self.gateway.provider.name, model=answered.model, deterministic=False)

    def _record_local(self, feature: Feature[Any], caller: Caller, model: str, started: float) -> None:
        self.ledger.record_local(feature, caller, model, round((time.perf_counter() - started) * 1000))


def build_features(settings: Settings, database: Database, client: redis.Redis) -> AiFeatures:
    """The features on the provider the settings name (AI_PROVIDER)."""
    ledger = UsageLedger(database)
    if settings.ai_provider == "local":
        return AiFeatures(None, ledger)
    limits = UsageLimits(
        client, per_minute=settings.ai_requests_per_minute, daily_budget_usd=settings.ai_daily_budget_usd
    )
    breaker = CircuitBreaker.from_settings(client, settings)
    return AiFeatures(Gateway(OpenRouterClient(settings, breaker), settings.ai_models, limits, ledger), ledger)


def _reference_values(subject: ReferenceAnswers) -> dict[str, object]:
    asked = {question.id for question in subject.questions}
    return {
        "relationship": subject.relationship,
        "questions": [{"id": q.id, "text": q.text, "kind": q.kind} for q in subject.questions],
        "answers": [_answer(a) for a in subject.answers if a.question_id in asked],
        "signals": [signal.to_json() for signal in subject.signals],
        "others": [
            {
                "referenceId": other.id,
                "relationship": other.relationship,
                "answers": [_answer(a, OTHER_ANSWER_CHARS) for a in other.answers if a.question_id in asked],
            }
            for other in subject.others[:OTHER_REFERENCES]
        ],
    }


def _answer(answer: Answer, max_chars: int | None = None) -> dict[str, object]:
    text = answer.text[:max_chars] if answer.text and max_chars else answer.text
    return {"questionId": answer.question_id, "rating": answer.rating, "text": text}


def _check_citations(assessment: ReferenceAssessment, subject: ReferenceAnswers) -> list[str]:
    """The summary's citations name answered questions; contradictions name the other referees given."""
    answered = {answer.question_id for answer in subject.answers}
    others = {other.id for other in subject.others[:OTHER_REFERENCES]}
    problems = [
        f"sentences.{i}.cites: cite at least one question id of the questionnaire"
        for i, sentence in enumerate(assessment.sentences)
        if not sentence.cites
    ]
    problems += [
        f"sentences.{i}.cites: {cite!r} is not the id of an answered question"
        for i, sentence in enumerate(assessment.sentences)
        for cite in sentence.cites
        if cite not in answered
    ]
    problems += [
        f"contradictions.{i}.referenceId: {item.reference_id!r} is not one of the other referees given"
        for i, item in enumerate(assessment.contradictions)
        if item.reference_id not in others
    ]
    return problems


def _posting_values(posting: JobPosting) -> dict[str, object]:
    return {
        "title": posting.title,
        "description": posting.description,
        "requirements": list(posting.requirements),
        "location": posting.location,
        "remoteType": posting.remote_type,
        "salaryRange": posting.salary_range,
    }


def _check_quotes(analysis: JobAnalysis, posting: JobPosting) -> list[str]:
    """Every flagged phrase is quoted from the posting (so the employer can find it)."""
    text = " ".join([posting.title, posting.description, *posting.requirements]).lower()
    return [
        f"exclusionaryWording.{i}.phrase: {flag.phrase!r} does not appear in the posting; quote it exactly"
        for i, flag in enumerate(analysis.exclusionary_wording)
        if " ".join(flag.phrase.lower().split()) not in " ".join(text.split())
    ]
