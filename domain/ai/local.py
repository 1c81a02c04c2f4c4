"""The embedded verifier: deterministic, explainable heuristics in place of a language model.

It needs no network and gives the same assessment for the same answers every time, so it
is what runs when no model provider is configured, and in tests. Its summary says that
no language model was used, and never quotes the referee's answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from domain.ai.schemas import CitedSentence, Contradiction, ReferenceAssessment, Scored
from domain.ai.wording import markers, tone_cues, words
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

HIGH_RATING = 4.0
LOW_RATING = 2.0
MISMATCH_PENALTY = 70
"""Consistency lost when the written answers read wholly against the ratings (less when mixed)."""
SHOWN_CUES = 5
CONTRADICTION_GAP = 3
"""Two referees' ratings of one question this far apart (e.g. 5 and 2) contradict each other."""
MAX_CONTRADICTIONS = 20
MAX_SENTENCES = 12
MAX_SENTENCE_CHARS = 600
MAX_CITES = 20
MAX_QUESTION_CHARS = 300

MARKER_KINDS = ("number", "action", "period", "example")
_ONE_SIDED = {(True, False): "ratings but no written answers", (False, True): "written answers but no ratings"}
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
class OtherReference:
    """Another referee's answers for the same candidate, to compare ratings with."""

    id: str
    relationship: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class _Reading:
    """What the heuristics take from the answers."""

    ratings: tuple[int, ...]
    rated_ids: tuple[str, ...]
    text_ids: tuple[str, ...]
    text_answers: int
    word_count: int
    markers: frozenset[str]
    positive: tuple[str, ...]
    negative: tuple[str, ...]

    @property
    def average(self) -> float:
        """Return the average rating 1..5 (0 without ratings)."""
        return sum(self.ratings) / len(self.ratings) if self.ratings else 0.0

    @property
    def rating_score(self) -> float:
        """Scale the average rating 1..5 to 0..100 (0 without ratings)."""
        return (self.average - 1) * 25 if self.ratings else 0.0

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
    model = "deepref-heuristics-v2"

    def assess(
        self,
        relationship: str,
        questions: Sequence[Question],
        answers: Sequence[Answer],
        signals: Sequence[Signal],
        others: Sequence[OtherReference] = (),
    ) -> ReferenceAssessment:
        """Score the answers to the asked questions, explain why, and compare them with `others`.

        Answers to questions not in `questions` are ignored (the others' too); ratings
        outside 1..5 are clamped. An unknown relationship is called "referee" in the summary.
        """
        reading = _read(questions, answers)
        score = _score(reading, signals)
        contradictions = _contradictions(questions, answers, others)
        label = RELATIONSHIP_LABELS.get(relationship, "referee")
        head = [
            CitedSentence(text=HEADER, cites=[]),
            CitedSentence(text=_ratings_sentence(label, reading), cites=_cites(reading.rated_ids)),
            CitedSentence(text=_text_sentence(reading), cites=_cites(reading.text_ids)),
            *_signals_sentence(signals),
        ]
        tail = CitedSentence(text=_score_sentence(score, reading), cites=[])
        room = MAX_SENTENCES - len(head) - 1
        return ReferenceAssessment(
            score=score,
            consistency=_consistency(reading),
            specificity=_specificity(reading),
            sentences=[*head, *_contradiction_sentences(contradictions, room), tail],
            contradictions=contradictions,
        )


def _read(questions: Sequence[Question], answers: Sequence[Answer]) -> _Reading:
    asked = {question.id for question in questions}
    given = [answer for answer in answers if answer.question_id in asked]
    ratings = tuple(_clamp(answer.rating, 1, 5) for answer in given if answer.rating is not None)
    texts = [answer.text for answer in given if answer.text and answer.text.strip()]
    all_words = words("\n".join(texts))
    cues = [cue for text in texts for cue in tone_cues(words(text))]
    return _Reading(
        ratings=ratings,
        rated_ids=tuple(answer.question_id for answer in given if answer.rating is not None),
        text_ids=tuple(answer.question_id for answer in given if answer.text and answer.text.strip()),
        text_answers=len(texts),
        word_count=len(all_words),
        markers=markers(all_words),
        positive=tuple(cue for cue, tone in cues if tone > 0),
        negative=tuple(cue for cue, tone in cues if tone < 0),
    )


def _score(reading: _Reading, signals: Sequence[Signal]) -> int:
    weight = reading.rating_weight / 100
    base = weight * reading.rating_score + (1 - weight) * reading.text_score
    penalty = sum(PENALTIES[signal.severity] for signal in signals)
    return _clamp(round(base) - penalty, 0, 100)


def _specificity(reading: _Reading) -> Scored:
    if not reading.text_answers:
        return Scored(score=0, notes="No written answers were given, so there is no detail to assess.")
    kinds = [_count(sum(m.startswith(f"{kind}:") for m in reading.markers), kind) for kind in MARKER_KINDS]
    found = ", ".join(kind for kind in kinds if not kind.startswith("0 "))
    details = (
        f"{_count(len(reading.markers), 'distinct concrete detail')} ({found})" if found else "no concrete details"
    )
    return Scored(
        score=round(reading.text_score),
        notes=(
            f"{_count(reading.word_count, 'word')} in {_count(reading.text_answers, 'written answer')} with {details}; "
            f"half the score is for length (full at {FULL_LENGTH_WORDS} words), half for concrete details such as "
            f"numbers, actions, periods and examples (full at {FULL_SPECIFICITY_MARKERS})."
        ),
    )


def _consistency(reading: _Reading) -> Scored:
    if not reading.ratings or not reading.text_answers:
        missing = _ONE_SIDED.get((bool(reading.ratings), bool(reading.text_answers)), "no answers")
        return Scored(score=100, notes=f"Not checked: there are {missing} to compare, so nothing contradicts.")
    average, positive, negative = reading.average, len(reading.positive), len(reading.negative)
    cues = f"{_count(positive, 'positive cue')} and {_count(negative, 'negative cue')}"
    if not positive and not negative:
        notes = f"The written answers use no clearly positive or negative wording to compare with the {average:.1f}/5"
        return Scored(score=100, notes=f"{notes} average rating.")
    balance = (positive - negative) / (positive + negative)
    if average >= HIGH_RATING and balance < 0:
        return _mismatch(f"high ({average:.1f}/5 on average)", "negative", cues, reading.negative, balance)
    if average <= LOW_RATING and balance > 0:
        return _mismatch(f"low ({average:.1f}/5 on average)", "positive", cues, reading.positive, balance)
    agree = (average >= HIGH_RATING and balance > 0) or (average <= LOW_RATING and balance < 0)
    verb = "agree with" if agree else "do not contradict"
    return Scored(score=100, notes=f"The written answers ({cues}) {verb} the {average:.1f}/5 average rating.")


def _mismatch(ratings: str, tone: str, cues: str, found: Sequence[str], balance: float) -> Scored:
    shown = ", ".join(f'"{cue}"' for cue in list(dict.fromkeys(found))[:SHOWN_CUES])
    return Scored(
        score=100 - round(MISMATCH_PENALTY * abs(balance)),
        notes=f"The ratings are {ratings} but the written answers read {tone} ({cues}, e.g. {shown}).",
    )


def _contradictions(
    questions: Sequence[Question], answers: Sequence[Answer], others: Sequence[OtherReference]
) -> list[Contradiction]:
    texts = {question.id: question.text for question in questions}
    mine = _ratings_by_question(questions, answers)
    found: list[Contradiction] = []
    for other in others:
        theirs = _ratings_by_question(questions, other.answers)
        label = RELATIONSHIP_LABELS.get(other.relationship)
        referee = f"another referee ({label})" if label else "another referee"
        for question_id, rating in mine.items():
            their = theirs.get(question_id)
            if their is None or abs(rating - their) < CONTRADICTION_GAP:
                continue
            question = _shorten(texts[question_id])
            description = f'This referee rated "{question}" {rating}/5; {referee} rated it {their}/5.'
            found.append(Contradiction(reference_id=other.id, question_id=question_id, description=description))
    return found[:MAX_CONTRADICTIONS]


def _ratings_by_question(questions: Sequence[Question], answers: Sequence[Answer]) -> dict[str, int]:
    """Return each asked question's first rating (clamped to 1..5), in question order."""
    rated: dict[str, int] = {}
    for answer in answers:
        if answer.rating is not None and answer.question_id not in rated:
            rated[answer.question_id] = _clamp(answer.rating, 1, 5)
    return {question.id: rated[question.id] for question in questions if question.id in rated}


def _contradiction_sentences(contradictions: Sequence[Contradiction], room: int) -> list[CitedSentence]:
    """One sentence per contradiction; when they do not fit in `room`, the rest are counted in one sentence."""
    sentences = [
        CitedSentence(text=item.description, cites=_cites([item.question_id or ""])) for item in contradictions
    ]
    if len(sentences) <= room:
        return sentences
    rest = contradictions[room - 1 :]
    text = f"{len(rest)} more ratings differ by {CONTRADICTION_GAP} points or more from other referees' ratings."
    return [*sentences[: room - 1], CitedSentence(text=text, cites=_cites([item.question_id or "" for item in rest]))]


def _ratings_sentence(label: str, reading: _Reading) -> str:
    if not reading.ratings:
        return f"The {label} gave no ratings."
    across = _count(len(reading.ratings), "question")
    return f"The {label} rated the candidate {reading.average:.1f}/5 on average across {across}."


def _text_sentence(reading: _Reading) -> str:
    if not reading.text_answers:
        return "No written answers were given."
    single = reading.text_answers == 1
    subject, give = ("The written answer is", "gives") if single else ("The written answers are", "give")
    words = reading.word_count
    depth = "brief" if words < BRIEF_WORDS else "moderately detailed" if words < DETAILED_WORDS else "detailed"
    if len(reading.markers) >= CONCRETE_MARKERS:
        detail = f"and {give} concrete examples"
    elif reading.markers:
        detail = f"and {give} few specifics"
    else:
        detail = f"but {give} no concrete examples"
    return f"{subject} {depth} ({_count(reading.word_count, 'word')}) {detail}."


def _signals_sentence(signals: Sequence[Signal]) -> list[CitedSentence]:
    if not signals:
        return []
    found = "fraud signal was found" if len(signals) == 1 else "fraud signals were found"
    reasons = "; ".join(signal.message.rstrip(".") for signal in signals)
    text = f"{len(signals)} {found}: {reasons}."
    if len(text) > MAX_SENTENCE_CHARS:
        strong = sum(signal.severity == "strong" for signal in signals)
        counted = f"{strong} strong, {len(signals) - strong} weak"
        text = f"{len(signals)} {found} ({counted}); see the list of signals for each reason."
    return [CitedSentence(text=text, cites=[])]


def _score_sentence(score: int, reading: _Reading) -> str:
    if not reading.ratings and not reading.text_answers:
        basis = "there were no answers to assess"
    else:
        basis = f"ratings weigh {reading.rating_weight}% and written answers {100 - reading.rating_weight}%"
    return (
        f"Score {score}/100: {basis}, minus {PENALTIES['strong']} per strong and {PENALTIES['weak']} per weak "
        f"fraud signal."
    )


def _cites(question_ids: Sequence[str]) -> list[str]:
    """Return the distinct non-empty ids in order, at most `MAX_CITES`."""
    return list(dict.fromkeys(qid for qid in question_ids if qid))[:MAX_CITES]


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_QUESTION_CHARS else f"{text[: MAX_QUESTION_CHARS - 1].rstrip()}…"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
