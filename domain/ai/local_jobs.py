"""The embedded job-posting analyser: deterministic, explainable heuristics in place of a language model.

It needs no network and gives the same analysis for the same posting every time. Its
vocabulary (skills, title words, buzzwords, wording that may exclude applicants) is data,
in `job_vocabulary.json` next to this module; its summary says no language model was used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.ai.schemas import FlaggedWording, JobAnalysis, Scored, Seniority, SeniorityReading

VOCABULARY: dict[str, Any] = json.loads(Path(__file__).with_name("job_vocabulary.json").read_text("utf-8"))

MAX_SKILLS = 40
MAX_FLAGS = 40
LEVELS: tuple[Seniority, ...] = ("intern", "junior", "mid", "senior", "lead", "executive")
LEVEL_PHRASES: dict[Seniority, str] = {
    "intern": "An internship",
    "junior": "A junior role",
    "mid": "A mid-level role",
    "senior": "A senior role",
    "lead": "A lead role",
    "executive": "An executive role",
    "unspecified": "A role of unspecified level",
}
# Years of experience asked for → level: up to 1 junior, up to 4 mid, up to 7 senior, more lead.
YEARS_TO_LEVEL: tuple[tuple[int, Seniority], ...] = ((1, "junior"), (4, "mid"), (7, "senior"))

VERY_SHORT_WORDS, VERY_SHORT_PENALTY = 50, 30
SHORT_WORDS, SHORT_PENALTY = 150, 10
LONG_SENTENCE_WORDS, LONG_SENTENCE_PENALTY = 25, 15
NO_REQUIREMENTS_PENALTY = 15
NO_LOCATION_PENALTY = 15
BUZZWORD_PENALTY, MAX_BUZZWORD_PENALTY = 5, 20
SHOUTED_WORDS, SHOUTING_PENALTY = 2, 10
SHOWN = 5

HEADER = "Automated heuristic analysis (no language model was used)."

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")
_CAPITALS = re.compile(r"\b[A-Z]{4,}\b")
_YEARS = re.compile(
    r"\b(\d{1,2})\s*(?:\+|plus)?\s*(?:(?:-|\u2013|to)\s*\d{1,2}\s*)?(?:years?|yrs?)['\u2019]?\s+"
    r"(?:of\s+)?(?:[\w-]+\s+){0,3}?experience",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class JobPosting:
    """A job posting as its employer wrote it; `remote_type` is "onsite", "hybrid" or "remote"."""

    title: str
    description: str
    requirements: tuple[str, ...]
    location: str | None
    remote_type: str
    salary_range: dict[str, Any] | None


@dataclass(frozen=True)
class _Flag:
    pattern: re.Pattern[str]
    reason: str
    suggestion: str


def _term(term: str) -> str:
    """Return the regex for a vocabulary term: spaces and hyphens match either; capitals match only as written."""
    body = r"[\s-]+".join(re.escape(word) for word in re.split(r"[\s-]+", term))
    return body if term == term.lower() else f"(?-i:{body})"


def _terms(terms: Iterable[str]) -> re.Pattern[str]:
    """Return one case-insensitive regex finding any of the terms as whole words, the longest first."""
    alternatives = "|".join(_term(term) for term in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![\w+#.])(?:{alternatives})(?![\w+#])(?!\.\w)", re.IGNORECASE)


def _wording(pattern: str) -> re.Pattern[str]:
    """Return a wording pattern as a case-insensitive regex on word boundaries, a space matching any whitespace."""
    return re.compile(r"\b(?:" + pattern.replace(" ", r"\s+") + r")\b", re.IGNORECASE)


def _key(text: str) -> str:
    return " ".join(re.split(r"[\s-]+", text.lower()))


SKILLS: dict[str, str] = {_key(term): name for name, terms in VOCABULARY["skills"].items() for term in terms}
_SKILL_TERMS = _terms(term for terms in VOCABULARY["skills"].values() for term in terms)
_TITLE_WORDS = {level: _terms(VOCABULARY["seniority_titles"][level]) for level in LEVELS}
_BUZZWORDS = _terms(VOCABULARY["buzzwords"])
SHOUT_EXCEPTIONS = frozenset(VOCABULARY["shout_exceptions"])
_FLAGS = tuple(
    _Flag(_wording(pattern), flag["reason"], flag["suggestion"])
    for flag in VOCABULARY["wording"]
    for pattern in flag["patterns"]
)


class LocalJobAnalyzer:
    """Analyse a job posting with fixed heuristics; same posting, same analysis."""

    provider = "local"
    model = "deepref-job-heuristics-v1"

    def analyse(self, posting: JobPosting) -> JobAnalysis:
        """Read the skills, level, clarity and exclusionary wording of a posting, and whether it gives a salary."""
        text = _full_text(posting)
        skills = find_skills(text)
        seniority = read_seniority(posting)
        clarity = rate_clarity(posting)
        flags = find_exclusionary_wording(text)
        missing_salary = posting.salary_range is None
        return JobAnalysis(
            skills=skills,
            seniority=seniority,
            clarity=clarity,
            exclusionary_wording=flags,
            missing_salary=missing_salary,
            summary=_summary(seniority.level, len(skills), clarity.score, len(flags), missing_salary),
        )


def find_skills(text: str) -> list[str]:
    """Return the vocabulary's skills named in the text, by canonical name, in order of first mention."""
    found = dict.fromkeys(SKILLS[_key(match.group())] for match in _SKILL_TERMS.finditer(text))
    return list(found)[:MAX_SKILLS]


def read_seniority(posting: JobPosting) -> SeniorityReading:
    """Read the level from the title's words (the most senior wins), else from the years of experience asked for."""
    for level in reversed(LEVELS):
        match = _TITLE_WORDS[level].search(posting.title)
        if match:
            return SeniorityReading(level=level, reason=f'Based on "{match.group()}" in the title.')
    text = "\n".join([posting.description, *posting.requirements])
    years = [int(match.group(1)) for match in _YEARS.finditer(text)]
    if not years:
        return SeniorityReading(
            level="unspecified", reason="Neither the title nor the text states a level or the years of experience."
        )
    most = max(years)
    level = next((level for limit, level in YEARS_TO_LEVEL if most <= limit), "lead")
    return SeniorityReading(level=level, reason=f"Based on the {most}+ years of experience asked for.")


def rate_clarity(posting: JobPosting) -> Scored:
    """Score how clearly the posting is written, 0..100; the notes say what lowered the score."""
    found = [finding for check in _CLARITY_CHECKS if (finding := check(posting)) is not None]
    if not found:
        return Scored(
            score=100,
            notes="Nothing lowered it: a description of good length with readable sentences, listed requirements, "
            "a location where one is needed, no buzzwords and no shouting in capitals.",
        )
    lowered = "; ".join(f"{note} (-{penalty})" for penalty, note in found)
    return Scored(score=max(0, 100 - sum(penalty for penalty, _ in found)), notes=f"Lowered by: {lowered}.")


def find_exclusionary_wording(text: str) -> list[FlaggedWording]:
    """Return the phrases that may put off or exclude applicants, each once, as written, in order of appearance."""
    matches = sorted(
        ((match.start(), -match.end(), flag) for flag in _FLAGS for match in flag.pattern.finditer(text)),
        key=lambda item: item[:2],
    )
    found: dict[str, FlaggedWording] = {}
    covered = 0
    for start, negative_end, flag in matches:
        if start < covered:
            continue
        covered = -negative_end
        phrase = " ".join(text[start:covered].split())
        found.setdefault(phrase.lower(), FlaggedWording(phrase=phrase, reason=flag.reason, suggestion=flag.suggestion))
    return list(found.values())[:MAX_FLAGS]


def _length(posting: JobPosting) -> tuple[int, str] | None:
    words = len(_WORD.findall(posting.description))
    if words < VERY_SHORT_WORDS:
        return VERY_SHORT_PENALTY, f"a very short description ({_count(words, 'word')})"
    if words < SHORT_WORDS:
        return SHORT_PENALTY, f"a short description ({words} words)"
    return None


def _sentences(posting: JobPosting) -> tuple[int, str] | None:
    lengths = [n for n in (len(_WORD.findall(part)) for part in _SENTENCE_END.split(posting.description)) if n]
    average = sum(lengths) / len(lengths) if lengths else 0
    if average <= LONG_SENTENCE_WORDS:
        return None
    return (
        LONG_SENTENCE_PENALTY,
        f"long sentences ({average:.0f} words on average; aim for under {LONG_SENTENCE_WORDS})",
    )


def _requirements(posting: JobPosting) -> tuple[int, str] | None:
    if any(requirement.strip() for requirement in posting.requirements):
        return None
    return NO_REQUIREMENTS_PENALTY, "no listed requirements"


def _location(posting: JobPosting) -> tuple[int, str] | None:
    if posting.remote_type == "remote" or (posting.location and posting.location.strip()):
        return None
    return NO_LOCATION_PENALTY, f"no location although the role is {posting.remote_type}"


def _buzzwords(posting: JobPosting) -> tuple[int, str] | None:
    text = _full_text(posting)
    found = list(dict.fromkeys(" ".join(match.group().split()) for match in _BUZZWORDS.finditer(text)))
    if not found:
        return None
    penalty = min(BUZZWORD_PENALTY * len(found), MAX_BUZZWORD_PENALTY)
    return penalty, f"buzzwords ({_quoted(found)})"


def _shouting(posting: JobPosting) -> tuple[int, str] | None:
    text = _full_text(posting)
    words = [word for word in _CAPITALS.findall(text) if word not in SHOUT_EXCEPTIONS and _key(word) not in SKILLS]
    if len(words) < SHOUTED_WORDS:
        return None
    return SHOUTING_PENALTY, f"words in capitals that read as shouting ({_quoted(list(dict.fromkeys(words)))})"


_CLARITY_CHECKS: tuple[Callable[[JobPosting], tuple[int, str] | None], ...] = (
    _length,
    _sentences,
    _requirements,
    _location,
    _buzzwords,
    _shouting,
)


def _full_text(posting: JobPosting) -> str:
    return "\n".join([posting.title, posting.description, *posting.requirements])


def _summary(level: Seniority, skills: int, clarity: int, flags: int, missing_salary: bool) -> str:
    recognised = _count(skills, "recognised skill") if skills else "no recognised skills"
    asks = f"{LEVEL_PHRASES[level]} asking for {recognised}, with a clarity score of {clarity}/100."
    wording = f"{_count(flags, 'phrase')} may exclude some applicants" if flags else "No exclusionary wording was found"
    salary = "no salary range is given" if missing_salary else "a salary range is given"
    return f"{HEADER} {asks} {wording}; {salary}."


def _quoted(items: list[str]) -> str:
    shown = ", ".join(f'"{item}"' for item in items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown} and {len(items) - SHOWN} more"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
