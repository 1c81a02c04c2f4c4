"""The questions a referee answers: a built-in questionnaire per relationship, plus the candidate's own.

The built-in questionnaires are data (`questionnaires.json`), versioned: a reference
stores the name and version it was asked with, and a copy of its questions, so later
edits never change what a referee was asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from domain.references.models import Relationship

DATA = Path(__file__).with_name("questionnaires.json")
MAX_CUSTOM_QUESTIONS = 5
# Longest free-text answer, in characters.
MAX_ANSWER_LENGTH = 5000
RATING_MIN, RATING_MAX = 1, 5

QuestionKind = Literal["rating", "text"]


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    kind: QuestionKind
    required: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "kind": self.kind, "required": self.required}

    @classmethod
    def of(cls, data: dict[str, Any]) -> Question:
        return cls(id=data["id"], text=data["text"], kind=data["kind"], required=bool(data["required"]))


@dataclass(frozen=True)
class Questionnaire:
    name: str
    version: int
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class CustomQuestion:
    """A question the candidate adds to the built-in ones."""

    text: str
    kind: QuestionKind
    required: bool = True


@cache
def _catalogue() -> dict[str, list[dict[str, Any]]]:
    with DATA.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return {name: versions for name, versions in data.items() if not name.startswith("_")}


def current(relationship: Relationship) -> Questionnaire:
    """The newest version of the built-in questionnaire for `relationship`."""
    newest = max(_catalogue()[relationship.value], key=lambda entry: int(entry["version"]))
    return Questionnaire(
        name=relationship.value,
        version=int(newest["version"]),
        questions=tuple(Question.of(q) for q in newest["questions"]),
    )


def questions_for(relationship: Relationship, custom: list[CustomQuestion]) -> tuple[Questionnaire, list[Question]]:
    """The questionnaire to use and every question to ask: the built-in ones, then the candidate's."""
    if len(custom) > MAX_CUSTOM_QUESTIONS:
        raise ValueError(f"at most {MAX_CUSTOM_QUESTIONS} custom questions")
    questionnaire = current(relationship)
    asked = list(questionnaire.questions)
    asked += [Question(f"custom-{n}", q.text, q.kind, q.required) for n, q in enumerate(custom, start=1)]
    return questionnaire, asked
