"""The wording the local heuristics read: concrete details and tone in a referee's answers.

Word lists are data, kept compact; what they catch is documented where they are used
(`domain/ai/local.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Vocabulary, kept compact.
# fmt: off
ACTION_WORDS = frozenset({
    "built", "coached", "created", "delivered", "designed", "developed", "drove", "implemented", "improved",
    "increased", "launched", "led", "managed", "mentored", "migrated", "negotiated", "organised", "organized", "owned",
    "reduced", "resolved", "shipped", "trained",
})
PERIOD_WORDS = frozenset({
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
    "december", "q1", "q2", "q3", "q4", "quarter", "semester", "sprint", "months", "weeks", "years",
})
EXAMPLE_PHRASES = ("for example", "for instance", "e g", "such as", "in particular", "specifically")
# Tone cues for consistency; negated by a preceding negator ("never late", "not very reliable").
POSITIVE_CUES = (
    "excellent", "outstanding", "exceptional", "reliable", "dependable", "trustworthy", "great", "brilliant", "superb",
    "impressive", "strong", "talented", "skilled", "dedicated", "diligent", "thorough", "proactive", "helpful", "good",
    "recommend", "exceeded", "excelled", "punctual", "asset", "pleasure", "on time", "above and beyond",
)
NEGATIVE_CUES = (
    "struggled", "struggles", "struggling", "late", "poor", "poorly", "unreliable", "however", "weak", "careless",
    "sloppy", "missed", "miss", "misses", "disappointing", "disappointed", "lazy", "inconsistent", "mediocre",
    "complaints", "rude", "unprofessional", "dishonest", "bad", "lacked", "lacking", "lacks", "needs improvement",
    "need improvement", "room for improvement", "below expectations",
)
NEUTRAL_CUES = ("in late", "not only")  # consumed so that "in late March" or "not only reliable" read right
NEGATORS = frozenset({
    "not", "never", "no", "hardly", "rarely", "seldom", "without", "nor", "cannot", "can't", "didn't", "don't",
    "doesn't", "wasn't", "isn't",
})
INTENSIFIERS = frozenset({
    "very", "always", "so", "too", "particularly", "especially", "really", "that", "overly", "quite", "entirely",
    "fully",
})
# fmt: on
TONE_CUES: dict[str, int] = {
    **dict.fromkeys(POSITIVE_CUES, 1),
    **dict.fromkeys(NEGATIVE_CUES, -1),
    **dict.fromkeys(NEUTRAL_CUES, 0),
}
_CUES = sorted(((tuple(cue.split()), tone) for cue, tone in TONE_CUES.items()), key=lambda item: -len(item[0]))

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def words(text: str) -> list[str]:
    """Return the words of the text, lower-cased, apostrophes kept inside words."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def markers(words: Sequence[str]) -> frozenset[str]:
    """Return the distinct concrete details in the words: numbers, actions, named periods, examples."""
    found = {f"number:{word}" for word in words if any(char.isdigit() for char in word)}
    found |= {f"action:{word}" for word in words if word in ACTION_WORDS}
    found |= {f"period:{word}" for word in words if word in PERIOD_WORDS}
    joined = f" {' '.join(words)} "
    found |= {f"example:{phrase}" for phrase in EXAMPLE_PHRASES if f" {phrase} " in joined}
    return frozenset(found)


def tone_cues(words: Sequence[str]) -> list[tuple[str, int]]:
    """Return the tone cues in the words, each flipped when negated ("never late", "not very reliable")."""
    found: list[tuple[str, int]] = []
    i = 0
    while i < len(words):
        cue = next((item for item in _CUES if tuple(words[i : i + len(item[0])]) == item[0]), None)
        if cue is None:
            i += 1
            continue
        phrase, tone = cue
        start = _negation_start(words, i)
        if tone:
            found.append((" ".join(words[start : i + len(phrase)]), -tone if start < i else tone))
        i += len(phrase)
    return found


def _negation_start(words: Sequence[str], i: int) -> int:
    """Return where a negation of the cue at `i` starts ("not", "not always"), or `i` when it is not negated."""
    if i >= 1 and words[i - 1] in NEGATORS:
        return i - 1
    if i >= 2 and words[i - 1] in INTENSIFIERS and words[i - 2] in NEGATORS:
        return i - 2
    return i
