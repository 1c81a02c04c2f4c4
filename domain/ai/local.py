"""The embedded verifier: deterministic, explainable heuristics in place of a language model.

It needs no network and gives the same assessment for the same answers every time, so it
is what runs when no model provider is configured, and in tests. Its summary says that
no language model was used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from domain.references.signals import Signal

RELATIONSHIP_LABELS: dict[str, str] = {
    "manager": "manager",
    "peer": "peer",
    "direct_report": "direct report",
    "client": "client",
    "academic": "academic supervisor",
}

RATING_WEIGHT = 60
"""Percent of the score from ratings when there are both ratings and written answers."""
PENALTIES: dict[str, int] = {"strong": 25, "weak": 10}

FULL_LENGTH_WORDS = 150
"""Written answers this long (all together) earn the whole length half of the text score."""
FULL_SPECIFICITY_MARKERS = 5
"""Distinct concrete details (numbers, actions, periods, examples) that earn the whole specificity half."""
CONCRETE_MARKERS = 3
BRIEF_WORDS = 30
DETAILED_WORDS = 120

ACTION_WORDS = frozenset(
    {
        "built",
        "coached",
        "created",
        "delivered",
        "designed",
        "developed",
        "drove",
        "implemented",
        "improved",
        "increased",
        "launched",
        "led",
        "managed",
        "mentored",
        "migrated",
        "negotiated",
        "organised",
        "organized",
        "owned",
        "reduced",
        "resolved",
        "shipped",
        "trained",
    }
)
PERIOD_WORDS = frozenset(
    {
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "q1",
        "q2",
        "q3",
        "q4",
        "quarter",
        "semester",
        "sprint",
        "months",
        "weeks",
        "years",
    }
)
EXAMPLE_PHRASES = ("for example", "for instance", "e g", "such as", "in particular", "specifically")

HEADER = "Automated heuristic assessment (no language model was used)."


@dataclass(frozen=True)
class Question:
    """A question as the referee was asked it."""

    id: str
    text: str
    kind: Literal["rating", "text"]
    required: bool


@dataclass(frozen=True)
class Answer:
    """The referee's answer to one question: a 1..5 rating, some text, or both."""

    question_id: str
    rating: int | None
    text: str | None


@dataclass(frozen=True)
class Assessment:
    """A verifier's verdict on one reference: a 0..100 score and a summary for a reader."""

    score: int
    summary: str
    provider: str
    model: str
    deterministic: bool

    def to_json(self) -> dict[str, Any]:
        """Return the assessment as the API shows it."""
        return {
            "score": self.score,
            "summary": self.summary,
            "provider": self.provider,
            "model": self.model,
            "deterministic": self.deterministic,
        }


@dataclass(frozen=True)
class _Reading:
    """What the heuristics take from the answers."""

    ratings: tuple[int, ...]
    text_answers: int
    word_count: int
    markers: frozenset[str]

    @property
    def rating_score(self) -> float:
        """Scale the average rating 1..5 to 0..100 (0 without ratings)."""
        if not self.ratings:
            return 0.0
        return (sum(self.ratings) / len(self.ratings) - 1) * 25

    @property
    def text_score(self) -> float:
        """Score the written answers 0..100: half for length, half for concrete detail."""
        length = min(self.word_count / FULL_LENGTH_WORDS, 1.0)
        specificity = min(len(self.markers) / FULL_SPECIFICITY_MARKERS, 1.0)
        return 50 * length + 50 * specificity

    @property
    def rating_weight(self) -> int:
        """Return the percent of the score from ratings; the rest comes from the written answers."""
        if not self.text_answers:
            return 100
        return RATING_WEIGHT if self.ratings else 0


class LocalVerifier:
    """Assess a reference with fixed heuristics; same input, same assessment."""

    provider = "local"
    model = "deepref-heuristics-v1"

    def assess(
        self,
        relationship: str,
        questions: Sequence[Question],
        answers: Sequence[Answer],
        signals: Sequence[Signal],
    ) -> Assessment:
        """Score the answers to the asked questions and summarise why.

        Answers to questions not in `questions` are ignored; ratings outside 1..5 are
        clamped. An unknown relationship is called "referee" in the summary.
        """
        reading = _read(questions, answers)
        score = _score(reading, signals)
        label = RELATIONSHIP_LABELS.get(relationship, "referee")
        sentences = [
            HEADER,
            _answers_sentence(label, reading),
            *_signals_sentence(signals),
            _score_sentence(score, reading),
        ]
        return Assessment(
            score=score, summary=" ".join(sentences), provider=self.provider, model=self.model, deterministic=True
        )


def _read(questions: Sequence[Question], answers: Sequence[Answer]) -> _Reading:
    asked = {question.id for question in questions}
    given = [answer for answer in answers if answer.question_id in asked]
    ratings = tuple(_clamp(answer.rating, 1, 5) for answer in given if answer.rating is not None)
    texts = [answer.text for answer in given if answer.text and answer.text.strip()]
    words = re.findall(r"[^\W_]+(?:['\u2019][^\W_]+)*", "\n".join(texts).lower())
    return _Reading(ratings=ratings, text_answers=len(texts), word_count=len(words), markers=_markers(words))


def _markers(words: Sequence[str]) -> frozenset[str]:
    """Return the distinct concrete details in the words: numbers, actions, named periods, examples."""
    found = {f"number:{word}" for word in words if any(char.isdigit() for char in word)}
    found |= {f"action:{word}" for word in words if word in ACTION_WORDS}
    found |= {f"period:{word}" for word in words if word in PERIOD_WORDS}
    joined = f" {' '.join(words)} "
    found |= {f"example:{phrase}" for phrase in EXAMPLE_PHRASES if f" {phrase} " in joined}
    return frozenset(found)


def _score(reading: _Reading, signals: Sequence[Signal]) -> int:
    weight = reading.rating_weight / 100
    base = weight * reading.rating_score + (1 - weight) * reading.text_score
    penalty = sum(PENALTIES[signal.severity] for signal in signals)
    return _clamp(round(base) - penalty, 0, 100)


def _answers_sentence(label: str, reading: _Reading) -> str:
    if reading.ratings:
        average = sum(reading.ratings) / len(reading.ratings)
        across = _count(len(reading.ratings), "question")
        rated = f"The {label} rated the candidate {average:.1f}/5 on average across {across}"
    else:
        rated = f"The {label} gave no ratings"
    return f"{rated}; {_text_clause(reading)}."


def _text_clause(reading: _Reading) -> str:
    if not reading.text_answers:
        return "no written answers were given"
    single = reading.text_answers == 1
    subject, give = ("the written answer is", "gives") if single else ("the written answers are", "give")
    if reading.word_count < BRIEF_WORDS:
        depth = "brief"
    elif reading.word_count < DETAILED_WORDS:
        depth = "moderately detailed"
    else:
        depth = "detailed"
    if len(reading.markers) >= CONCRETE_MARKERS:
        detail = f"and {give} concrete examples"
    elif reading.markers:
        detail = f"and {give} few specifics"
    else:
        detail = f"but {give} no concrete examples"
    return f"{subject} {depth} ({_count(reading.word_count, 'word')}) {detail}"


def _signals_sentence(signals: Sequence[Signal]) -> list[str]:
    if not signals:
        return []
    found = "fraud signal was found" if len(signals) == 1 else "fraud signals were found"
    reasons = "; ".join(signal.message.rstrip(".") for signal in signals)
    return [f"{len(signals)} {found}: {reasons}."]


def _score_sentence(score: int, reading: _Reading) -> str:
    if not reading.ratings and not reading.text_answers:
        basis = "there were no answers to assess"
    else:
        basis = f"ratings weigh {reading.rating_weight}% and written answers {100 - reading.rating_weight}%"
    return (
        f"Score {score}/100: {basis}, minus {PENALTIES['strong']} per strong and {PENALTIES['weak']} per weak "
        f"fraud signal."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
