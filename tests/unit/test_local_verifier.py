import pytest

from domain.ai.local import Answer, Assessment, LocalVerifier, Question
from domain.references.signals import Signal

RATED = tuple(Question(f"r{i}", f"Rate skill {i}", "rating", required=True) for i in range(5))
WRITTEN = tuple(Question(f"t{i}", f"Describe {i}", "text", required=False) for i in range(2))
QUESTIONS = RATED + WRITTEN

# 14 words with five concrete details (led, delivered, "for example", 2023, March), padded to 150 words.
SPECIFIC = "She led the team, for example in 2023, and delivered the project in March."
PADDING = " ".join(["steadily"] * 136)

STRONG = Signal("same_ip", "strong", "The reference was submitted from the same network address the candidate used.")
WEAK = Signal(
    "same_user_agent", "weak", "The reference was submitted from a browser identical to the one the candidate used."
)


def ratings(*values: int) -> list[Answer]:
    return [Answer(f"r{i}", value, None) for i, value in enumerate(values)]


def texts(*values: str) -> list[Answer]:
    return [Answer(f"t{i}", None, value) for i, value in enumerate(values)]


def assess(answers, signals=(), relationship="manager", questions=QUESTIONS) -> Assessment:
    return LocalVerifier().assess(relationship, questions, answers, signals)


def test_full_assessment_weighs_ratings_sixty_and_text_forty():
    result = assess([*ratings(5, 5, 5, 3, 3), *texts(SPECIFIC, PADDING)])
    # Ratings 4.2/5 → 80; text 150 words and 5 details → 100; 0.6*80 + 0.4*100 = 88.
    assert result == Assessment(
        score=88,
        summary=(
            "Automated heuristic assessment (no language model was used). "
            "The manager rated the candidate 4.2/5 on average across 5 questions; "
            "the written answers are detailed (150 words) and give concrete examples. "
            "Score 88/100: ratings weigh 60% and written answers 40%, minus 25 per strong and 10 per weak fraud signal."
        ),
        provider="local",
        model="deepref-heuristics-v1",
        deterministic=True,
    )
    assert result.to_json() == {
        "score": 88,
        "summary": result.summary,
        "provider": "local",
        "model": "deepref-heuristics-v1",
        "deterministic": True,
    }


def test_same_input_gives_the_same_assessment():
    answers = [*ratings(4, 3, 5), *texts("Reliable, for example on the Q3 launch.")]
    assert assess(answers, [WEAK]) == assess(list(answers), [WEAK])


@pytest.mark.parametrize(("values", "score"), [((5, 5), 100), ((1, 1), 0), ((3,), 50), ((4, 5), 88), ((9, 0), 50)])
def test_ratings_alone_make_the_whole_score(values, score):
    result = assess(ratings(*values))
    assert result.score == score
    assert "no written answers were given" in result.summary
    assert "ratings weigh 100% and written answers 0%" in result.summary


def test_text_alone_makes_the_whole_score():
    result = assess(texts(SPECIFIC, PADDING))
    assert result.score == 100
    assert "The manager gave no ratings; the written answers are detailed (150 words)" in result.summary
    assert "ratings weigh 0% and written answers 100%" in result.summary


def test_text_score_is_half_length_half_specifics():
    # 75 words (half of 150) with no details → 25; the same with 5 details instead of filler → 50.
    assert assess(texts(" ".join(["fine"] * 75))).score == 25
    assert assess(texts(" ".join(["fine"] * 61) + " " + SPECIFIC)).score == 75


def test_short_vague_text_scores_low_beside_top_ratings():
    result = assess([*ratings(5, 5), *texts("Good.")])
    assert result.score == 60  # 0.6*100 + 0.4*(50/150)
    assert "the written answer is brief (1 word) but gives no concrete examples" in result.summary


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (" ".join(["fine"] * 29), "brief (29 words) but gives no"),
        (" ".join(["fine"] * 30), "moderately detailed (30 words)"),
        (" ".join(["fine"] * 119), "moderately detailed (119 words)"),
        (" ".join(["fine"] * 120), "detailed (120 words)"),
        ("She led it. E.g. the rollout.", "and gives few specifics"),
        ("Good.|Led it for example.", "answers are brief (5 words) and give few specifics"),
        ("Led and delivered eight projects in 2021.", "and gives concrete examples"),
        ("In Q4 of 2022 she managed 3 people.", "and gives concrete examples"),
        ("Such as the spring term, for instance.", "and gives few specifics"),
        ("She didn't miss a deadline", "(5 words)"),
        ("She didn\u2019t miss a deadline", "(5 words)"),
    ],
)
def test_summary_describes_the_written_answers(text, phrase):
    assert phrase in assess(texts(*text.split("|"))).summary


def test_signals_are_penalised_and_listed():
    answers = [*ratings(5, 5), *texts(SPECIFIC, PADDING)]
    one = assess(answers, [WEAK])
    assert one.score == 90
    assert (
        "1 fraud signal was found: The reference was submitted from a browser identical to the one the candidate used."
        in one.summary
    )
    two = assess(answers, [STRONG, WEAK])
    assert two.score == 65
    assert (
        "2 fraud signals were found: The reference was submitted from the same network address the candidate used; "
        in (two.summary)
    )
    assert "fraud signal" not in assess(answers).summary.split("Score")[0]


def test_score_is_clamped_to_zero():
    assert assess(ratings(2, 2), [STRONG, STRONG]).score == 0
    assert assess(ratings(1), [STRONG] * 5).score == 0


def test_no_answers_scores_zero():
    result = assess([])
    assert result.score == 0
    assert "The manager gave no ratings; no written answers were given." in result.summary
    assert "Score 0/100: there were no answers to assess," in result.summary


def test_answers_to_unasked_questions_and_blank_text_are_ignored():
    answers = [
        Answer("r0", 5, None),
        Answer("unknown", 1, "Terrible."),
        Answer("t0", None, "   "),
        Answer("t1", None, None),
    ]
    result = assess(answers)
    assert result.score == 100
    assert "across 1 question;" in result.summary
    assert "no written answers were given" in result.summary


def test_a_rating_question_with_a_comment_counts_both():
    result = assess([Answer("r0", 5, "Great work.")])
    assert "5.0/5 on average across 1 question; the written answer is brief (2 words)" in result.summary


@pytest.mark.parametrize(
    ("relationship", "label"),
    [
        ("manager", "The manager rated"),
        ("peer", "The peer rated"),
        ("direct_report", "The direct report rated"),
        ("client", "The client rated"),
        ("academic", "The academic supervisor rated"),
        ("neighbour", "The referee rated"),
    ],
)
def test_summary_names_the_relationship(relationship, label):
    result = assess(ratings(4), relationship=relationship)
    assert result.summary.startswith("Automated heuristic assessment (no language model was used). ")
    assert label in result.summary


def test_summary_does_not_copy_answer_text():
    secret = "Project Nightingale at Initech"
    assert "Nightingale" not in assess(texts(f"{secret} {PADDING}")).summary


def test_verifier_identifies_itself():
    assert (LocalVerifier.provider, LocalVerifier.model) == ("local", "deepref-heuristics-v1")
