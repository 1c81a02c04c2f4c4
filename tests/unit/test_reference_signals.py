import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.references.signals import (
    DISPOSABLE_DOMAINS,
    PUBLIC_MAIL_DOMAINS,
    Evidence,
    Signal,
    detect,
    is_flagged,
    is_near_identical,
)

SUBMITTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
ANSWER = "She led the migration of our billing system in 2023 and delivered it two weeks early for the whole team."
OTHER_ANSWER = "He was a reliable peer who mentored juniors and kept the on-call rota calm during the winter outage."

CLEAN = Evidence(
    candidate_ips=frozenset({"198.51.100.7"}),
    candidate_user_agents=frozenset({BROWSER}),
    referee_ips=frozenset({"203.0.113.9"}),
    referee_user_agents=frozenset({"Mozilla/5.0 (Macintosh) Safari/17.0"}),
    opened_at=SUBMITTED - timedelta(minutes=10),
    submitted_at=SUBMITTED,
    question_count=6,
    text_answer_count=2,
    referee_email="boss@acme-corp.example",
    candidate_email="cand@gmail.com",
    duplicate_contacts=0,
    free_texts=(ANSWER,),
    other_free_texts=((OTHER_ANSWER,),),
)

PERSONAL_DATA = re.compile(r"@|198\.51|203\.0|Mozilla|acme|gmail|billing|migration")


def codes(evidence: Evidence) -> list[str]:
    return [signal.code for signal in detect(evidence)]


def only(evidence: Evidence) -> Signal:
    (signal,) = detect(evidence)
    return signal


def test_clean_reference_raises_no_signal():
    assert detect(CLEAN) == []
    assert not is_flagged(detect(CLEAN))


@pytest.mark.parametrize(
    ("candidate", "referee"),
    [
        ({"198.51.100.7"}, {"198.51.100.7"}),
        ({" 198.51.100.7 "}, {"203.0.113.9", "198.51.100.7"}),
        ({"198.51.100.7"}, {"::ffff:198.51.100.7"}),
        ({"2001:db8::1"}, {"2001:DB8:0:0::1"}),
        ({"unknown-proxy"}, {"UNKNOWN-PROXY"}),
    ],
)
def test_same_ip_is_strong(candidate, referee):
    signal = only(replace(CLEAN, candidate_ips=frozenset(candidate), referee_ips=frozenset(referee)))
    assert (signal.code, signal.severity) == ("same_ip", "strong")
    assert not PERSONAL_DATA.search(signal.message)


@pytest.mark.parametrize(
    ("candidate", "referee"),
    [({""}, {""}), ({"  "}, {""}), ({"198.51.100.7"}, {"198.51.100.8"}), (set(), {"198.51.100.7"})],
)
def test_blank_or_different_ips_are_not_a_signal(candidate, referee):
    assert detect(replace(CLEAN, candidate_ips=frozenset(candidate), referee_ips=frozenset(referee))) == []


def test_same_user_agent_is_weak_and_compared_after_strip():
    signal = only(replace(CLEAN, referee_user_agents=frozenset({f"  {BROWSER}\n", "curl/8"})))
    assert (signal.code, signal.severity) == ("same_user_agent", "weak")
    assert not PERSONAL_DATA.search(signal.message)


@pytest.mark.parametrize("agents", [{""}, {BROWSER.lower()}, set()])
def test_blank_or_different_user_agents_are_not_a_signal(agents):
    evidence = replace(
        CLEAN, candidate_user_agents=frozenset(agents | {""}), referee_user_agents=frozenset({"", BROWSER})
    )
    assert detect(evidence) == []


def fast(seconds: float, questions: int = 6, texts: int = 2) -> Evidence:
    return replace(
        CLEAN, opened_at=SUBMITTED - timedelta(seconds=seconds), question_count=questions, text_answer_count=texts
    )


def test_submission_under_half_the_minimum_is_strong():
    # 6 questions and 2 written answers: 5*6 + 20*2 = 70 s.
    signal = only(fast(12))
    assert signal == Signal(
        "fast_submission",
        "strong",
        "The answers were submitted 12 s after the questionnaire was opened (under 70 s is implausibly fast).",
    )


def test_submission_between_half_and_the_minimum_is_weak():
    assert only(fast(35)).severity == "weak"
    assert only(fast(69.9)).message.startswith("The answers were submitted 69 s after")
    assert detect(fast(70)) == []


def test_minimum_is_never_under_thirty_seconds():
    assert only(fast(29, questions=1, texts=0)).message.endswith("(under 30 s is implausibly fast).")
    assert only(fast(14, questions=1, texts=0)).severity == "strong"
    assert only(fast(15, questions=1, texts=0)).severity == "weak"
    assert detect(fast(30, questions=0, texts=0)) == []


def test_submission_before_opening_counts_as_no_time():
    assert only(fast(-5)).message.startswith("The answers were submitted 0 s after")


def test_never_opened_is_strong():
    signal = only(replace(CLEAN, opened_at=None))
    assert (signal.code, signal.severity) == ("fast_submission", "strong")
    assert signal.message == "The answers were submitted without the questionnaire ever being opened."


@pytest.mark.parametrize(
    "email",
    ["x@mailinator.com", "X@MAILINATOR.COM", "x@inbox.mailinator.com", " x@yopmail.com. ", "a@b@getnada.com"],
)
def test_disposable_domain_is_strong_including_subdomains(email):
    signal = only(replace(CLEAN, referee_email=email))
    assert (signal.code, signal.severity) == ("disposable_email_domain", "strong")
    assert not PERSONAL_DATA.search(signal.message)


@pytest.mark.parametrize("email", ["x@notmailinator.com", "x@mailinator.com.example", "no-at-sign", "x@", None])
def test_lookalike_or_missing_domains_are_not_disposable(email):
    assert detect(replace(CLEAN, referee_email=email)) == []


def test_domain_lists_are_lowercase_domains():
    assert len(DISPOSABLE_DOMAINS) >= 40
    assert {"mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com"} <= DISPOSABLE_DOMAINS
    assert {"gmail.com", "outlook.com", "proton.me", "web.de"} <= PUBLIC_MAIL_DOMAINS
    assert not DISPOSABLE_DOMAINS & PUBLIC_MAIL_DOMAINS
    assert all(domain == domain.lower() and "." in domain for domain in DISPOSABLE_DOMAINS | PUBLIC_MAIL_DOMAINS)


def test_referee_on_the_candidates_private_domain_is_weak():
    evidence = replace(CLEAN, candidate_email="cand@Acme-Corp.example", referee_email="boss@acme-corp.example")
    signal = only(evidence)
    assert (signal.code, signal.severity) == ("candidate_email_domain", "weak")
    assert not PERSONAL_DATA.search(signal.message)


@pytest.mark.parametrize(
    ("candidate", "referee"),
    [
        ("cand@gmail.com", "boss@gmail.com"),
        ("cand@outlook.com", "boss@outlook.com"),
        ("cand@acme-corp.example", "boss@eu.acme-corp.example"),
        ("no-at-sign", "boss@acme-corp.example"),
        ("cand@acme-corp.example", "no-at-sign"),
    ],
)
def test_public_or_different_domains_are_not_a_signal(candidate, referee):
    assert detect(replace(CLEAN, candidate_email=candidate, referee_email=referee)) == []


def test_referee_email_equal_to_candidates_is_strong_and_replaces_the_domain_signal():
    evidence = replace(CLEAN, candidate_email="Cand@Acme-Corp.example", referee_email=" cand@acme-corp.example")
    signal = only(evidence)
    assert (signal.code, signal.severity) == ("candidate_email", "strong")
    assert not PERSONAL_DATA.search(signal.message)


def test_same_address_on_a_public_provider_is_still_the_candidates_own():
    assert codes(replace(CLEAN, referee_email="CAND@gmail.com")) == ["candidate_email"]


@pytest.mark.parametrize(("count", "wording"), [(1, "for 1 other reference of"), (3, "for 3 other references of")])
def test_duplicate_referee_contact_is_strong(count, wording):
    signal = only(replace(CLEAN, duplicate_contacts=count))
    assert (signal.code, signal.severity) == ("duplicate_referee_contact", "strong")
    assert signal.message == (f"The same referee email address or phone number is used {wording} this candidate.")


def test_near_identical_answers_are_strong_and_counted():
    copy = (ANSWER.upper().replace(" ", "   "), "")
    reworded = (ANSWER.replace("two weeks early", "two weeks early!"),)
    evidence = replace(CLEAN, other_free_texts=(copy, (OTHER_ANSWER,), reworded))
    signal = only(evidence)
    assert (signal.code, signal.severity) == ("similar_answers", "strong")
    assert "2 other references" in signal.message
    assert not PERSONAL_DATA.search(signal.message)


def test_one_similar_reference_is_singular():
    assert "1 other reference of" in only(replace(CLEAN, other_free_texts=((ANSWER,),))).message


def test_answers_split_differently_across_questions_still_match():
    first, second = ANSWER[:40], ANSWER[40:]
    assert is_near_identical((first, second), (first + "\n" + second,))


def test_short_identical_answers_are_not_similar():
    evidence = replace(CLEAN, free_texts=("Great.", "Very good."), other_free_texts=(("Great.", "Very good."),))
    assert detect(evidence) == []
    seven = "one two three four five six seven"
    assert not is_near_identical((seven,), (seven,))
    assert is_near_identical((seven + " eight",), (seven + " eight",))


def test_one_side_too_short_is_not_similar():
    assert not is_near_identical((ANSWER,), ("Great",))
    assert not is_near_identical((), (ANSWER,))


def test_similarity_threshold_is_eighty_percent_of_shingles():
    words = [f"w{i}" for i in range(23)]  # 21 shingles
    base = " ".join(words)
    # Changing the last word replaces 1 of 21 shingles (20/22 ≈ 0.91); changing a middle one replaces 3 (18/24 = 0.75).
    assert is_near_identical((base,), (" ".join([*words[:-1], "x"]),))
    assert not is_near_identical((base,), (" ".join([*words[:11], "x", *words[12:]]),))


def test_no_other_references_means_no_similarity():
    assert detect(replace(CLEAN, other_free_texts=())) == []


def test_all_signals_in_fixed_order():
    evidence = replace(
        CLEAN,
        referee_ips=CLEAN.candidate_ips,
        referee_user_agents=CLEAN.candidate_user_agents,
        opened_at=None,
        referee_email="x@mailinator.com",
        duplicate_contacts=2,
        other_free_texts=((ANSWER,),),
    )
    assert codes(evidence) == [
        "same_ip",
        "same_user_agent",
        "fast_submission",
        "disposable_email_domain",
        "duplicate_referee_contact",
        "similar_answers",
    ]
    assert detect(evidence) == detect(evidence)
    assert codes(replace(evidence, referee_email="cand@acme.example", candidate_email="cand@acme.example")) == [
        "same_ip",
        "same_user_agent",
        "fast_submission",
        "candidate_email",
        "duplicate_referee_contact",
        "similar_answers",
    ]
    assert codes(replace(evidence, referee_email="boss@acme.example", candidate_email="cand@acme.example"))[3] == (
        "candidate_email_domain"
    )


STRONG = Signal("same_ip", "strong", "s")
WEAK = Signal("same_user_agent", "weak", "w")
OTHER_WEAK = Signal("candidate_email_domain", "weak", "w2")


@pytest.mark.parametrize(
    ("signals", "flagged"),
    [
        ([], False),
        ([WEAK], False),
        ([STRONG], True),
        ([WEAK, OTHER_WEAK], True),
        ([WEAK, STRONG], True),
        ((WEAK,), False),
    ],
)
def test_is_flagged_on_any_strong_or_two_weak(signals, flagged):
    assert is_flagged(signals) is flagged


def test_signal_to_json():
    assert WEAK.to_json() == {"code": "same_user_agent", "severity": "weak", "message": "w"}
