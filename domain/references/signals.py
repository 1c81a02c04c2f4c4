"""Fraud signals on a submitted reference: what the server saw that suggests a fake referee.

Pure rules over `Evidence` the caller gathers. Every `Signal.message` is shown to the
candidate and to employers, so it never carries personal data (no addresses, browsers,
contacts or answer text) — only counts and durations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv6Address, ip_address
from typing import Literal

Severity = Literal["strong", "weak"]

MIN_PLAUSIBLE_SECONDS = 30
SECONDS_PER_QUESTION = 5
SECONDS_PER_TEXT_ANSWER = 20

SHINGLE_SIZE = 3
SIMILARITY_THRESHOLD = 0.8
MIN_WORDS_FOR_SIMILARITY = 8

DISPOSABLE_DOMAINS: frozenset[str] = frozenset(
    {
        "10minutemail.com",
        "20minutemail.com",
        "33mail.com",
        "burnermail.io",
        "discard.email",
        "dispostable.com",
        "emailondeck.com",
        "fakeinbox.com",
        "getairmail.com",
        "getnada.com",
        "guerrillamail.biz",
        "guerrillamail.com",
        "guerrillamail.de",
        "guerrillamail.info",
        "guerrillamail.net",
        "guerrillamail.org",
        "guerrillamailblock.com",
        "grr.la",
        "harakirimail.com",
        "inboxbear.com",
        "incognitomail.org",
        "jetable.org",
        "mailcatch.com",
        "maildrop.cc",
        "mailinator.com",
        "mailinator.net",
        "mailnesia.com",
        "mintemail.com",
        "mohmal.com",
        "mytemp.email",
        "sharklasers.com",
        "spam4.me",
        "spamgourmet.com",
        "temp-mail.org",
        "tempail.com",
        "tempmail.com",
        "tempmail.net",
        "tempmailo.com",
        "tempr.email",
        "throwawaymail.com",
        "trashmail.com",
        "trashmail.de",
        "yopmail.com",
        "yopmail.fr",
    }
)

PUBLIC_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "aol.com",
        "fastmail.com",
        "gmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "googlemail.com",
        "hey.com",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "outlook.com",
        "pm.me",
        "proton.me",
        "protonmail.com",
        "qq.com",
        "t-online.de",
        "tutanota.com",
        "web.de",
        "yahoo.com",
        "yandex.com",
        "yandex.ru",
        "zoho.com",
    }
)


@dataclass(frozen=True)
class Signal:
    """One reason to doubt a reference; `message` is safe to show to anyone who may see the reference."""

    code: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        """Return the signal as the API shows it."""
        return {"code": self.code, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class Evidence:
    """What the server saw; the caller gathers it."""

    candidate_ips: frozenset[str]
    candidate_user_agents: frozenset[str]
    referee_ips: frozenset[str]
    referee_user_agents: frozenset[str]
    opened_at: datetime | None
    submitted_at: datetime
    question_count: int
    text_answer_count: int
    referee_email: str | None
    candidate_email: str
    duplicate_contacts: int
    free_texts: tuple[str, ...]
    other_free_texts: tuple[tuple[str, ...], ...]


def detect(evidence: Evidence) -> list[Signal]:
    """Return the signals the evidence raises, always in the same order for the same evidence."""
    found = (rule(evidence) for rule in _RULES)
    return [signal for signal in found if signal is not None]


def is_flagged(signals: Sequence[Signal]) -> bool:
    """Tell whether a reference needs a human look: any strong signal, or two or more weak ones."""
    weak = 0
    for signal in signals:
        if signal.severity == "strong":
            return True
        weak += 1
    return weak >= 2


def _same_ip(evidence: Evidence) -> Signal | None:
    """Spot a referee link used from an address the candidate used."""
    if not _normal_ips(evidence.referee_ips) & _normal_ips(evidence.candidate_ips):
        return None
    return Signal("same_ip", "strong", "The reference was submitted from the same network address the candidate used.")


def _same_user_agent(evidence: Evidence) -> Signal | None:
    """Spot a referee link used from a browser identical to the candidate's."""
    if not _non_empty(evidence.referee_user_agents) & _non_empty(evidence.candidate_user_agents):
        return None
    return Signal(
        "same_user_agent", "weak", "The reference was submitted from a browser identical to the one the candidate used."
    )


def _fast_submission(evidence: Evidence) -> Signal | None:
    """Spot answers sent faster than anyone could read and write them."""
    if evidence.opened_at is None:
        return Signal(
            "fast_submission", "strong", "The answers were submitted without the questionnaire ever being opened."
        )
    minimum = max(
        MIN_PLAUSIBLE_SECONDS,
        SECONDS_PER_QUESTION * evidence.question_count + SECONDS_PER_TEXT_ANSWER * evidence.text_answer_count,
    )
    # A clock step backwards between open and submit reads as "no time at all".
    elapsed = max(0.0, (evidence.submitted_at - evidence.opened_at).total_seconds())
    if elapsed >= minimum:
        return None
    return Signal(
        "fast_submission",
        "strong" if elapsed < minimum / 2 else "weak",
        f"The answers were submitted {int(elapsed)} s after the questionnaire was opened "
        f"(under {minimum} s is implausibly fast).",
    )


def _disposable_email_domain(evidence: Evidence) -> Signal | None:
    """Spot a referee address on a throwaway-mailbox service (subdomains included)."""
    domain = _domain(evidence.referee_email)
    if domain is None or not any(suffix in DISPOSABLE_DOMAINS for suffix in _suffixes(domain)):
        return None
    return Signal(
        "disposable_email_domain", "strong", "The referee's email address belongs to a disposable-email service."
    )


def _candidate_email(evidence: Evidence) -> Signal | None:
    """Spot a referee address that is the candidate's own, or on the candidate's private domain."""
    if evidence.referee_email is None:
        return None
    if evidence.referee_email.strip().lower() == evidence.candidate_email.strip().lower():
        return Signal("candidate_email", "strong", "The referee's email address is the candidate's own email address.")
    domain = _domain(evidence.referee_email)
    if domain is None or domain in PUBLIC_MAIL_DOMAINS or domain != _domain(evidence.candidate_email):
        return None
    return Signal(
        "candidate_email_domain",
        "weak",
        "The referee's email address is on the same private email domain as the candidate's.",
    )


def _duplicate_referee_contact(evidence: Evidence) -> Signal | None:
    """Spot one referee contact reused across several of the candidate's references."""
    count = evidence.duplicate_contacts
    if count < 1:
        return None
    return Signal(
        "duplicate_referee_contact",
        "strong",
        f"The same referee email address or phone number is used for {_other_references(count)} of this candidate.",
    )


def _similar_answers(evidence: Evidence) -> Signal | None:
    """Spot written answers that are near-copies of another reference's."""
    count = sum(1 for other in evidence.other_free_texts if is_near_identical(evidence.free_texts, other))
    if count == 0:
        return None
    return Signal(
        "similar_answers",
        "strong",
        f"The written answers are nearly identical to those of {_other_references(count)} of this candidate.",
    )


def is_near_identical(texts: Sequence[str], other_texts: Sequence[str]) -> bool:
    """Tell whether two references' free-text answers, taken together, are near-copies.

    Each side's answers are joined with a newline and normalised (lowercase, punctuation
    removed, whitespace collapsed) into words. Both sides need at least
    `MIN_WORDS_FOR_SIMILARITY` words, so short answers like "Great." never match; then the
    Jaccard similarity of their sets of word 3-shingles (runs of three consecutive words)
    must reach `SIMILARITY_THRESHOLD`.
    """
    words, other_words = _words("\n".join(texts)), _words("\n".join(other_texts))
    if min(len(words), len(other_words)) < MIN_WORDS_FOR_SIMILARITY:
        return False
    shingles, other_shingles = _shingles(words), _shingles(other_words)
    return len(shingles & other_shingles) / len(shingles | other_shingles) >= SIMILARITY_THRESHOLD


def _words(text: str) -> list[str]:
    """Split text into lowercase words, punctuation treated as space."""
    return re.sub(r"[^\w\s]|_", " ", text.lower()).split()


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    """Return the runs of `SHINGLE_SIZE` consecutive words (callers pass at least that many)."""
    return {tuple(words[i : i + SHINGLE_SIZE]) for i in range(len(words) - SHINGLE_SIZE + 1)}


def _other_references(count: int) -> str:
    return f"{count} other reference" if count == 1 else f"{count} other references"


def _normal_ips(ips: Iterable[str]) -> set[str]:
    """Return the addresses in one spelling each (IPv4-mapped IPv6 as IPv4), blanks dropped."""
    return {_normal_ip(ip) for ip in _non_empty(ips)}


def _normal_ip(raw: str) -> str:
    try:
        ip = ip_address(raw)
    except ValueError:
        return raw.lower()
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _non_empty(values: Iterable[str]) -> set[str]:
    stripped = (value.strip() for value in values)
    return {value for value in stripped if value}


def _domain(email: str | None) -> str | None:
    """Return the lowercase part after the last '@', or None when there is none."""
    if email is None:
        return None
    _, at, domain = email.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    return domain if at and domain else None


def _suffixes(domain: str) -> list[str]:
    """Return the domain and each parent domain: a.b.c → a.b.c, b.c, c."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


_RULES: tuple[Callable[[Evidence], Signal | None], ...] = (
    _same_ip,
    _same_user_agent,
    _fast_submission,
    _disposable_email_domain,
    _candidate_email,
    _duplicate_referee_contact,
    _similar_answers,
)
