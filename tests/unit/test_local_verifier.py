import pytest

from domain.ai.local import Answer, LocalVerifier, OtherReference, Question
from domain.ai.schemas import CitedSentence, Contradiction, ReferenceAssessment, Scored
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
HEADER = CitedSentence(text="Automated heuristic assessment (no language model was used).", cites=[])
SCORE_RULE = "minus 25 per strong and 10 per weak fraud signal."


def ratings(*values: int) -> list[Answer]:
    return [Answer(f"r{i}", value, None) for i, value in enumerate(values)]


def texts(*values: str) -> list[Answer]:
    return [Answer(f"t{i}", None, value) for i, value in enumerate(values)]


def assess(answers, signals=(), relationship="manager", questions=QUESTIONS, others=()) -> ReferenceAssessment:
    return LocalVerifier().assess(relationship, questions, answers, signals, others)


def test_full_assessment_weighs_ratings_sixty_and_text_forty():
    result = assess([*ratings(5, 5, 5, 3, 3), *texts(SPECIFIC, PADDING)])
    # Ratings 4.2/5 → 80; text 150 words and 5 details → 100; 0.6*80 + 0.4*100 = 88.
    assert result == ReferenceAssessment(
        score=88,
        consistency=Scored(
            score=100,
            notes="The written answers use no clearly positive or negative wording to compare with the 4.2/5 "
            "average rating.",
        ),
        specificity=Scored(
            score=100,
            notes="150 words in 2 written answers with 5 distinct concrete details (1 number, 2 actions, 1 period, "
            "1 example); half the score is for length (full at 150 words), half for concrete details such as "
            "numbers, actions, periods and examples (full at 5).",
        ),
        sentences=[
            HEADER,
            CitedSentence(
                text="The manager rated the candidate 4.2/5 on average across 5 questions.",
                cites=["r0", "r1", "r2", "r3", "r4"],
            ),
            CitedSentence(
                text="The written answers are detailed (150 words) and give concrete examples.", cites=["t0", "t1"]
            ),
            CitedSentence(text=f"Score 88/100: ratings weigh 60% and written answers 40%, {SCORE_RULE}", cites=[]),
        ],
        contradictions=[],
    )
    assert result.summary == (
        "Automated heuristic assessment (no language model was used). "
        "The manager rated the candidate 4.2/5 on average across 5 questions. "
        "The written answers are detailed (150 words) and give concrete examples. "
        "Score 88/100: ratings weigh 60% and written answers 40%, minus 25 per strong and 10 per weak fraud signal."
    )
    assert result.to_json()["specificity"]["score"] == 100


def test_same_input_gives_the_same_assessment():
    answers = [*ratings(4, 3, 5), *texts("Reliable, for example on the Q3 launch.")]
    others = [OtherReference("o1", "peer", tuple(ratings(1, 3, 1)))]
    assert assess(answers, [WEAK], others=others) == assess(list(answers), [WEAK], others=list(others))


@pytest.mark.parametrize(("values", "score"), [((5, 5), 100), ((1, 1), 0), ((3,), 50), ((4, 5), 88), ((9, 0), 50)])
def test_ratings_alone_make_the_whole_score(values, score):
    result = assess(ratings(*values))
    assert result.score == score
    assert "No written answers were given." in result.summary
    assert "ratings weigh 100% and written answers 0%" in result.summary


def test_text_alone_makes_the_whole_score():
    result = assess(texts(SPECIFIC, PADDING))
    assert result.score == 100
    assert result.sentences[1] == CitedSentence(text="The manager gave no ratings.", cites=[])
    assert "The written answers are detailed (150 words)" in result.summary
    assert "ratings weigh 0% and written answers 100%" in result.summary


def test_text_score_is_half_length_half_specifics():
    # 75 words (half of 150) with no details → 25; the same with 5 details instead of filler → 75.
    vague = assess(texts(" ".join(["fine"] * 75)))
    assert (vague.score, vague.specificity.score) == (25, 25)
    assert vague.specificity.notes.startswith("75 words in 1 written answer with no concrete details; ")
    detailed = assess(texts(" ".join(["fine"] * 61) + " " + SPECIFIC))
    assert (detailed.score, detailed.specificity.score) == (75, 75)


def test_short_vague_text_scores_low_beside_top_ratings():
    result = assess([*ratings(5, 5), *texts("Good.")])
    assert result.score == 60  # 0.6*100 + 0.4*(50/150)
    assert result.specificity == Scored(
        score=0,
        notes="1 word in 1 written answer with no concrete details; half the score is for length (full at 150 "
        "words), half for concrete details such as numbers, actions, periods and examples (full at 5).",
    )
    assert "The written answer is brief (1 word) but gives no concrete examples." in result.summary


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


def test_specificity_counts_each_kind_of_detail():
    result = assess(texts("In Q4 of 2022 she managed 3 people, such as interns."))
    assert result.specificity.notes.startswith(
        "11 words in 1 written answer with 6 distinct concrete details (3 numbers, 1 action, 1 period, 1 example); "
    )
    assert result.specificity.score == 54  # 50*11/150 + 50 ("q4" is both a number and a period)


def test_signals_are_penalised_and_listed():
    answers = [*ratings(5, 5), *texts(SPECIFIC, PADDING)]
    one = assess(answers, [WEAK])
    assert one.score == 90
    assert one.sentences[3] == CitedSentence(
        text="1 fraud signal was found: The reference was submitted from a browser identical to the one the "
        "candidate used.",
        cites=[],
    )
    two = assess(answers, [STRONG, WEAK])
    assert two.score == 65
    assert two.sentences[3].text.startswith(
        "2 fraud signals were found: The reference was submitted from the same network address the candidate used; "
    )
    assert "fraud signal" not in assess(answers).summary.split("Score")[0]


def test_too_many_signals_to_list_in_one_sentence_are_counted():
    # Seven of these fit in a sentence's 600 characters; eight do not.
    assert len(assess(ratings(5), [STRONG, WEAK] * 3 + [STRONG]).sentences[3].text) == 591
    result = assess(ratings(5), [STRONG, WEAK] * 4)
    assert result.score == 0
    assert result.sentences[3] == CitedSentence(
        text="8 fraud signals were found (4 strong, 4 weak); see the list of signals for each reason.", cites=[]
    )


def test_score_is_clamped_to_zero():
    assert assess(ratings(2, 2), [STRONG, STRONG]).score == 0
    assert assess(ratings(1), [STRONG] * 5).score == 0


def test_no_answers_scores_zero():
    result = assess([])
    assert result == ReferenceAssessment(
        score=0,
        consistency=Scored(score=100, notes="Not checked: there are no answers to compare, so nothing contradicts."),
        specificity=Scored(score=0, notes="No written answers were given, so there is no detail to assess."),
        sentences=[
            HEADER,
            CitedSentence(text="The manager gave no ratings.", cites=[]),
            CitedSentence(text="No written answers were given.", cites=[]),
            CitedSentence(text=f"Score 0/100: there were no answers to assess, {SCORE_RULE}", cites=[]),
        ],
    )


def test_answers_to_unasked_questions_and_blank_text_are_ignored():
    answers = [
        Answer("r0", 5, None),
        Answer("unknown", 1, "Terrible."),
        Answer("t0", None, "   "),
        Answer("t1", None, None),
    ]
    result = assess(answers)
    assert result.score == 100
    assert result.sentences[1:3] == [
        CitedSentence(text="The manager rated the candidate 5.0/5 on average across 1 question.", cites=["r0"]),
        CitedSentence(text="No written answers were given.", cites=[]),
    ]


def test_a_rating_question_with_a_comment_counts_and_cites_both():
    result = assess([Answer("r0", 5, "Great work.")])
    assert result.sentences[1:3] == [
        CitedSentence(text="The manager rated the candidate 5.0/5 on average across 1 question.", cites=["r0"]),
        CitedSentence(text="The written answer is brief (2 words) but gives no concrete examples.", cites=["r0"]),
    ]


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
    assert result.sentences[0] == HEADER
    assert result.sentences[1].text.startswith(label)


def test_summary_does_not_copy_answer_text():
    secret = "Project Nightingale at Initech"
    result = assess([*ratings(5), *texts(f"{secret} was late. {PADDING}")])
    assert "Nightingale" not in result.summary
    assert "Nightingale" not in result.consistency.notes + result.specificity.notes


# Consistency: the tone of the written answers against the average rating.


def test_high_ratings_with_negative_text_are_inconsistent():
    result = assess([*ratings(5, 5, 4), *texts("Often late and unreliable; struggled with deadlines.", "Good.")])
    # 1 positive, 3 negative cues: balance -0.5 → 100 - 70*0.5.
    assert result.consistency == Scored(
        score=65,
        notes="The ratings are high (4.7/5 on average) but the written answers read negative (1 positive cue and 3 "
        'negative cues, e.g. "late", "unreliable", "struggled").',
    )


def test_low_ratings_with_glowing_text_are_inconsistent():
    result = assess([*ratings(1, 2), *texts("Outstanding and reliable, an excellent engineer.")])
    assert result.consistency == Scored(
        score=30,
        notes="The ratings are low (1.5/5 on average) but the written answers read positive (3 positive cues and 0 "
        'negative cues, e.g. "outstanding", "reliable", "excellent").',
    )


def test_only_five_distinct_cues_are_shown():
    text = "Late, late, poor, sloppy, rude, lazy, careless."
    assert assess([*ratings(5), *texts(text)]).consistency == Scored(
        score=30,
        notes="The ratings are high (5.0/5 on average) but the written answers read negative (0 positive cues and 7 "
        'negative cues, e.g. "late", "poor", "sloppy", "rude", "lazy").',
    )


@pytest.mark.parametrize(
    ("values", "text", "notes"),
    [
        (
            (5, 4),
            "Excellent and reliable.",
            "The written answers (2 positive cues and 0 negative cues) agree with the 4.5/5",
        ),
        (
            (1, 2),
            "Poor work, often late.",
            "The written answers (0 positive cues and 2 negative cues) agree with the 1.5/5",
        ),
        ((3,), "Outstanding.", "The written answers (1 positive cue and 0 negative cues) do not contradict the 3.0/5"),
        ((3,), "Unreliable.", "The written answers (0 positive cues and 1 negative cue) do not contradict the 3.0/5"),
        ((5,), "Excellent, however late.", '(1 positive cue and 2 negative cues, e.g. "however", "late")'),
        ((5,), "Great, reliable, however late.", "(2 positive cues and 2 negative cues) do not contradict the 5.0/5"),
        ((5,), "Never late, not once unreliable.", "(1 positive cue and 1 negative cue) do not contradict"),
        ((5,), "Never late and not very unreliable.", "(2 positive cues and 0 negative cues) agree with"),
        ((5,), "She didn\u2019t miss a deadline.", "(1 positive cue and 0 negative cues) agree with"),
        ((1,), "Not always on time; not only reliable.", "(1 positive cue and 1 negative cue) do not contradict"),
        (
            (5,),
            "Joined in late March, needs improvement.",
            '(0 positive cues and 1 negative cue, e.g. "needs improvement")',
        ),
        ((5,), "Would not recommend.", '(0 positive cues and 1 negative cue, e.g. "not recommend")'),
    ],
)
def test_consistency_reads_the_tone_of_the_written_answers(values, text, notes):
    assert notes in assess([*ratings(*values), *texts(text)]).consistency.notes


def test_tone_is_counted_across_all_written_answers():
    # Candid development feedback beside glowing strengths is not a contradiction of high ratings.
    result = assess([*ratings(5, 5), *texts("Outstanding and reliable.", "Needs improvement in delegation.")])
    assert result.consistency.score == 100


def test_mixed_tone_costs_less_than_a_wholly_opposite_one():
    answers = [*ratings(5), *texts("Reliable but poor and late.")]
    assert assess(answers).consistency.score == 77  # balance -1/3 → 100 - 23


@pytest.mark.parametrize(
    ("answers", "missing"),
    [
        (ratings(5, 1), "ratings but no written answers"),
        (texts("Struggled."), "written answers but no ratings"),
        ([], "no answers"),
    ],
)
def test_consistency_is_not_checked_without_both_ratings_and_text(answers, missing):
    assert assess(answers).consistency == Scored(
        score=100, notes=f"Not checked: there are {missing} to compare, so nothing contradicts."
    )


# Contradictions with the candidate's other referees.

PEER = OtherReference("ref-peer", "peer", (Answer("r0", 2, None), Answer("r1", 3, None), Answer("r2", 1, "Poor.")))


def test_a_rating_three_apart_from_another_referees_is_a_contradiction():
    result = assess([*ratings(5, 5, 4), *texts("Great.")], others=[PEER])
    assert result.contradictions == [
        Contradiction(
            reference_id="ref-peer",
            question_id="r0",
            description='This referee rated "Rate skill 0" 5/5; another referee (peer) rated it 2/5.',
        ),
        Contradiction(
            reference_id="ref-peer",
            question_id="r2",
            description='This referee rated "Rate skill 2" 4/5; another referee (peer) rated it 1/5.',
        ),
    ]
    assert result.sentences[3:5] == [
        CitedSentence(text=result.contradictions[0].description, cites=["r0"]),
        CitedSentence(text=result.contradictions[1].description, cites=["r2"]),
    ]
    assert result.sentences[-1].text.startswith("Score ")


def test_contradictions_follow_the_other_references_then_question_order():
    others = [
        OtherReference("b", "neighbour", (Answer("r1", 1, None), Answer("r0", 9, None), Answer("r0", 5, None))),
        OtherReference("a", "manager", (Answer("r0", 5, None), Answer("unknown", 1, None), Answer("t0", None, "x"))),
        OtherReference("c", "client", ()),
    ]
    result = assess([Answer("unknown", 5, None), *ratings(1, 5)], others=others)
    assert [(c.reference_id, c.question_id) for c in result.contradictions] == [("b", "r0"), ("b", "r1"), ("a", "r0")]
    assert result.contradictions[0].description == (
        'This referee rated "Rate skill 0" 1/5; another referee rated it 5/5.'
    )
    assert result.contradictions[2].description == (
        'This referee rated "Rate skill 0" 1/5; another referee (manager) rated it 5/5.'
    )


def test_long_question_texts_are_shortened_in_contradictions():
    question = Question("q", "How " + "very " * 100 + "good?", "rating", required=True)
    other = OtherReference("o", "peer", (Answer("q", 1, None),))
    [contradiction] = LocalVerifier().assess("manager", [question], [Answer("q", 5, None)], [], [other]).contradictions
    quoted = contradiction.description.split('"')[1]
    assert len(quoted) <= 300
    assert quoted.endswith("very…")


def test_contradictions_are_capped_and_summarised_within_the_sentence_limit():
    others = [OtherReference(f"o{i:02}", "peer", tuple(ratings(1, 1, 1, 1, 1))) for i in range(5)]
    result = assess([*ratings(5, 5, 5, 5, 5), *texts("Good.")], [WEAK], others=others)
    assert len(result.contradictions) == 20
    assert result.contradictions[-1].reference_id == "o03"
    # Header, ratings, text, signals and score leave room for 7: 6 contradictions and a count of the rest.
    assert len(result.sentences) == 12
    assert result.sentences[9] == CitedSentence(text=result.contradictions[5].description, cites=["r0"])
    assert result.sentences[10] == CitedSentence(
        text="14 more ratings differ by 3 points or more from other referees' ratings.",
        cites=["r1", "r2", "r3", "r4", "r0"],
    )


def test_verifier_identifies_itself():
    assert (LocalVerifier.provider, LocalVerifier.model) == ("local", "deepref-heuristics-v2")
