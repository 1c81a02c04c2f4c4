import pytest

from domain.ai import local_jobs
from domain.ai.local_jobs import (
    VOCABULARY,
    JobPosting,
    LocalJobAnalyzer,
    find_exclusionary_wording,
    find_skills,
    rate_clarity,
    read_seniority,
)
from domain.ai.schemas import FlaggedWording, JobAnalysis, Scored, SeniorityReading

SALARY = {"min": 70000, "max": 90000, "currency": "EUR", "period": "year"}

ENGINEERING = JobPosting(
    title="Senior Backend Engineer",
    description=(
        "You will design and run the services behind our booking platform. "
        "Our stack is Python with Django and FastAPI, Postgres, Redis and k8s on GCP. "
        "The web app is written in JS and TypeScript with React, and we ship through CI/CD several times a day. "
        "You will review code, mentor two engineers and work with product management on the roadmap. "
        "We expect 5+ years of professional experience building web services."
    ),
    requirements=("Python and SQL in production", "Kubernetes or Docker", "Clear written communication skills"),
    location="Berlin",
    remote_type="hybrid",
    salary_range=SALARY,
)

SALES = JobPosting(
    title="Salesman (Field Sales)",
    description=(
        "We are an energetic young team selling office furniture to businesses across the region. "
        "The ideal candidate is a rockstar closer. He will own a territory, handle cold calling and negotiation, "
        "and keep our CRM up to date. Native German speaker required. Recent graduates only. "
        "Good culture fit is a MUST, NO EXCEPTIONS."
    ),
    requirements=("Driving licence", "Max 3 years experience in B2B sales"),
    location="Munich",
    remote_type="onsite",
    salary_range=None,
)

# 160 words in 16 sentences of 10 words, no buzzwords, no capitals.
CLEAR = " ".join(["Our team plans, builds and tests software for the clinic."] * 16)


def posting(
    title="Engineer",
    description=CLEAR,
    requirements=("Python",),
    location="Berlin",
    remote_type="onsite",
    salary_range=SALARY,
) -> JobPosting:
    return JobPosting(title, description, tuple(requirements), location, remote_type, salary_range)


def flag(phrase: str, suggests: str) -> FlaggedWording:
    """The flag of the vocabulary entry whose suggestion mentions `suggests`."""
    [entry] = [entry for entry in VOCABULARY["wording"] if suggests in entry["suggestion"]]
    return FlaggedWording(phrase=phrase, reason=entry["reason"], suggestion=entry["suggestion"])


def test_an_engineering_posting_with_aliases():
    assert LocalJobAnalyzer().analyse(ENGINEERING) == JobAnalysis(
        skills=[
            "Python",
            "Django",
            "FastAPI",
            "PostgreSQL",
            "Redis",
            "Kubernetes",
            "Google Cloud",
            "JavaScript",
            "TypeScript",
            "React",
            "CI/CD",
            "Product Management",
            "SQL",
            "Docker",
            "Communication",
        ],
        seniority=SeniorityReading(level="senior", reason='Based on "Senior" in the title.'),
        clarity=Scored(score=90, notes="Lowered by: a short description (71 words) (-10)."),
        exclusionary_wording=[],
        missing_salary=False,
        summary=(
            "Automated heuristic analysis (no language model was used). A senior role asking for 15 recognised "
            "skills, with a clarity score of 90/100. No exclusionary wording was found; a salary range is given."
        ),
    )


def test_a_sales_posting_with_exclusionary_wording():
    assert LocalJobAnalyzer().analyse(SALES) == JobAnalysis(
        skills=["Cold Calling", "Negotiation", "CRM", "B2B Sales"],
        seniority=SeniorityReading(level="mid", reason="Based on the 3+ years of experience asked for."),
        clarity=Scored(
            score=75,
            notes='Lowered by: a short description (53 words) (-10); buzzwords ("rockstar") (-5); words in capitals '
            'that read as shouting ("MUST", "EXCEPTIONS") (-10).',
        ),
        exclusionary_wording=[
            flag("Salesman", "salesperson"),
            flag("energetic young team", "collaborative"),
            flag("rockstar", "experienced developer"),
            flag("He will", "you will"),
            flag("Native German speaker", "fluent in English"),
            flag("Recent graduates only", "graduates welcome"),
            flag("culture fit", "direct feedback"),
            flag("Max 3 years experience", "no maximum"),
        ],
        missing_salary=True,
        summary=(
            "Automated heuristic analysis (no language model was used). A mid-level role asking for 4 recognised "
            "skills, with a clarity score of 75/100. 8 phrases may exclude some applicants; no salary range is given."
        ),
    )


def test_an_empty_posting():
    empty = posting(title="Assistant", description="", requirements=(), location=None, salary_range=None)
    assert LocalJobAnalyzer().analyse(empty) == JobAnalysis(
        skills=[],
        seniority=SeniorityReading(
            level="unspecified", reason="Neither the title nor the text states a level or the years of experience."
        ),
        clarity=Scored(
            score=40,
            notes="Lowered by: a very short description (0 words) (-30); no listed requirements (-15); no location "
            "although the role is onsite (-15).",
        ),
        exclusionary_wording=[],
        missing_salary=True,
        summary=(
            "Automated heuristic analysis (no language model was used). A role of unspecified level asking for no "
            "recognised skills, with a clarity score of 40/100. No exclusionary wording was found; no salary range "
            "is given."
        ),
    )


def test_same_posting_gives_the_same_analysis():
    assert LocalJobAnalyzer().analyse(SALES) == LocalJobAnalyzer().analyse(SALES)


def test_analyser_identifies_itself():
    assert (LocalJobAnalyzer.provider, LocalJobAnalyzer.model) == ("local", "deepref-job-heuristics-v1")


# Skills.


@pytest.mark.parametrize(
    ("text", "skills"),
    [
        ("Java, not JavaScript; then javascript again and JAVA.", ["Java", "JavaScript"]),
        ("Vue.js and Node.js, no bare js in vue.js", ["Vue.js", "Node.js", "JavaScript"]),
        ("C++, C# and .NET (ASP.NET too); cpp", ["C++", "C#", ".NET", "ASP.NET"]),
        ("Postgres, postgresql and PSQL", ["PostgreSQL"]),
        ("k8s, K8S and Kubernetes", ["Kubernetes"]),
        ("project  management, problem-solving and problem solving", ["Project Management", "Problem Solving"]),
        ("scikit-learn, sklearn and scikit learn", ["scikit-learn"]),
        ("You will go far and excel in a fast-moving team that can react quickly", []),
        ("Go, Golang, Rust, Swift and Excel", ["Go", "Rust", "Swift", "Excel"]),
        ("python3, pythonic, jsx, reactive, postgresql16", []),
        ("Python.", ["Python"]),
        ("", []),
    ],
)
def test_skills_match_whole_terms_by_canonical_name(text, skills):
    assert find_skills(text) == skills


def test_skills_are_capped():
    names = list(VOCABULARY["skills"])
    text = ", ".join(term for terms in VOCABULARY["skills"].values() for term in terms[:1])
    assert find_skills(text) == names[:40]


def test_every_vocabulary_term_means_one_skill_and_is_found():
    terms = [(name, term) for name, names in VOCABULARY["skills"].items() for term in names]
    keys = [local_jobs._key(term) for _, term in terms]
    assert len(set(keys)) == len(keys), "a term is listed twice (spaces and hyphens are interchangeable)"
    for name, term in terms:
        assert find_skills(f"Experience with {term}.") == [name], term


# Seniority.


@pytest.mark.parametrize(
    ("title", "level", "word"),
    [
        ("Marketing Intern", "intern", "Intern"),
        ("Trainee Accountant", "intern", "Trainee"),
        ("Junior Developer", "junior", "Junior"),
        ("Graduate Analyst", "junior", "Graduate"),
        ("Entry-Level Designer", "junior", "Entry-Level"),
        ("Mid-level Engineer", "mid", "Mid-level"),
        ("Sr. Data Scientist", "senior", "Sr"),
        ("Senior Lead Engineer", "lead", "Lead"),
        ("Principal Engineer", "lead", "Principal"),
        ("Staff Engineer", "lead", "Staff"),
        ("Senior Vice President, Sales", "executive", "Vice President"),
        ("Head of Finance", "executive", "Head"),
        ("CTO", "executive", "CTO"),
    ],
)
def test_seniority_comes_from_the_most_senior_title_word(title, level, word):
    reading = read_seniority(posting(title=title, description="We want 1+ years of experience."))
    assert reading == SeniorityReading(level=level, reason=f'Based on "{word}" in the title.')


@pytest.mark.parametrize(
    ("text", "level", "years"),
    [
        ("No prior experience needed, 0 years of experience is fine.", "junior", 0),
        ("At least 1 year of experience.", "junior", 1),
        ("2+ years experience with clients.", "mid", 2),
        ("3-5 years of relevant experience.", "mid", 3),
        ("4 yrs experience.", "mid", 4),
        ("5 plus years of hands-on professional experience.", "senior", 5),
        ("7 years\u2019 experience.", "senior", 7),
        ("2+ years of SQL experience and 8+ years of leadership experience.", "lead", 8),
        ("12 years of experience.", "lead", 12),
    ],
)
def test_seniority_falls_back_on_the_years_of_experience(text, level, years):
    reading = read_seniority(posting(title="Analyst", description=text))
    assert reading == SeniorityReading(level=level, reason=f"Based on the {years}+ years of experience asked for.")


def test_years_in_the_requirements_count_and_other_years_do_not():
    assert read_seniority(posting(requirements=("6+ years of experience",))).level == "senior"
    founded = posting(description="Founded 20 years ago, we have 300 staff. We want a kind person.")
    assert read_seniority(founded).level == "unspecified"


# Clarity.


def test_a_clear_posting_scores_full_marks():
    assert rate_clarity(posting()) == Scored(
        score=100,
        notes="Nothing lowered it: a description of good length with readable sentences, listed requirements, "
        "a location where one is needed, no buzzwords and no shouting in capitals.",
    )


@pytest.mark.parametrize(
    ("changes", "notes"),
    [
        ({"description": "Build things."}, "a very short description (2 words) (-30)"),
        ({"description": "Build."}, "a very short description (1 word) (-30)"),
        ({"description": " ".join(["Build software well."] * 20)}, "a short description (60 words) (-10)"),
        (
            {"description": " ".join(["plan"] * 160)},
            "long sentences (160 words on average; aim for under 25) (-15)",
        ),
        ({"requirements": ("  ",)}, "no listed requirements (-15)"),
        ({"location": " ", "remote_type": "hybrid"}, "no location although the role is hybrid (-15)"),
        (
            {"title": "Python Ninja", "requirements": ("Synergy", "fast paced work")},
            'buzzwords ("Ninja", "Synergy", "fast paced") (-15)',
        ),
        (
            {"requirements": ("A guru, a wizard, a jedi, a unicorn, a self-starter and a go-getter",)},
            'buzzwords ("guru", "wizard", "jedi", "unicorn", "self-starter" and 1 more) (-20)',
        ),
        (
            {"title": "URGENT", "requirements": ("APPLY TODAY",)},
            'words in capitals that read as shouting ("URGENT", "APPLY", "TODAY") (-10)',
        ),
    ],
)
def test_clarity_says_what_lowered_it(changes, notes):
    assert rate_clarity(posting(**changes)).notes == f"Lowered by: {notes}."


def test_remote_roles_need_no_location():
    assert rate_clarity(posting(location=None, remote_type="remote")).score == 100


def test_acronyms_and_skills_in_capitals_are_not_shouting():
    assert rate_clarity(posting(requirements=("JSON, GDPR, HTML5, MYSQL, PYTHON, DOCKER and AWS",))).score == 100
    assert rate_clarity(posting(requirements=("URGENT",))).score == 100


def test_clarity_does_not_go_below_zero():
    worst = posting(
        title="ROCKSTAR NINJA GURU WIZARD",
        description="Synergy.",
        requirements=(),
        location=None,
    )
    # 30 + 15 + 15 + 20 + 10 = 90; long sentences need words, so add them in one sentence.
    assert rate_clarity(worst).score == 10
    long_winded = posting(
        title="ROCKSTAR NINJA GURU WIZARD", description="synergy " * 40, requirements=(), location=None
    )
    assert rate_clarity(long_winded) == Scored(
        score=0,
        notes="Lowered by: a very short description (40 words) (-30); long sentences (40 words on average; aim for "
        "under 25) (-15); no listed requirements (-15); no location although the role is onsite (-15); buzzwords "
        '("ROCKSTAR", "NINJA", "GURU", "WIZARD", "synergy") (-20); words in capitals that read as shouting '
        '("ROCKSTAR", "NINJA", "GURU", "WIZARD") (-10).',
    )


# Exclusionary wording.


@pytest.mark.parametrize(
    ("text", "phrase", "suggests"),
    [
        ("she should travel", "she should", "you will"),
        ("Two salesmen wanted", "salesmen", "salesperson"),
        ("Saleswoman wanted", "Saleswoman", "salesperson"),
        ("extra manpower", "manpower", "workforce"),
        ("budget in man-hours", "man-hours", "person-hours"),
        ("reports to the Chairman", "Chairman", "chairperson"),
        ("site foreman", "foreman", "supervisor"),
        ("a craftsman", "craftsman", "craftsperson"),
        ("a businessman", "businessman", "businessperson"),
        ("be a coding ninja", "ninja", "experienced developer"),
        ("rock stars welcome", "rock stars", "experienced developer"),
        ("a young\nand dynamic team", "young and dynamic team", "collaborative"),
        ("a young company", "young", "collaborative"),
        ("digital natives", "digital natives", "digital tools"),
        ("only recent grads", "only recent grads", "graduates welcome"),
        ("no more than 5 years of relevant experience", "no more than 5 years of relevant experience", "no maximum"),
        ("maximum of 4 years\u2019 experience", "maximum of 4 years\u2019 experience", "no maximum"),
        ("Able-bodied workers", "Able-bodied", "carry out the duties"),
        ("must be able to stand for 8 hours", "must be able to stand", "shop floor"),
        ("English mother tongue", "mother tongue", "fluent in English"),
        ("a native speaker of French", "native speaker", "fluent in English"),
        ("a good cultural fit", "cultural fit", "direct feedback"),
    ],
)
def test_exclusionary_wording_is_flagged_as_written(text, phrase, suggests):
    assert find_exclusionary_wording(text) == [flag(phrase, suggests)]


@pytest.mark.parametrize(
    "text",
    [
        "working with young people and young adults",
        "recent graduates and experienced people are welcome",
        "at least 5 years of experience",
        "the youngest team member",
        "sales manager with a chairperson",
        "craftsmanship and workmanship",
        "must be able to lift 10 kg",
        "the helper will",
    ],
)
def test_ordinary_wording_is_not_flagged(text):
    assert find_exclusionary_wording(text) == []


def test_each_phrase_is_flagged_once_and_in_order():
    text = "Rockstar wanted. He will... a rockstar, a ROCKSTAR; salesman"
    assert [item.phrase for item in find_exclusionary_wording(text)] == ["Rockstar", "He will", "salesman"]


def test_flags_are_capped():
    words = [f"{a}{b}" for a in "abcdefg" for b in "abcdefg"]
    text = ". ".join(f"native {word} speaker" for word in words)
    flags = find_exclusionary_wording(text)
    assert len(flags) == 40
    assert flags[-1].phrase == f"native {words[39]} speaker"


def test_summary_counts_a_single_flag_and_a_single_skill():
    analysis = LocalJobAnalyzer().analyse(posting(title="Python engineer", description=f"{CLEAR} Manpower."))
    assert analysis.summary == (
        "Automated heuristic analysis (no language model was used). A role of unspecified level asking for 1 "
        "recognised skill, with a clarity score of 100/100. 1 phrase may exclude some applicants; a salary range "
        "is given."
    )
