import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from domain.core.errors import AuthenticationFailed
from domain.users.passwords import PasswordHasher, password_problem
from domain.users.tokens import AccessTokens

SECRET = "s" * 48


@pytest.fixture
def tokens() -> AccessTokens:
    return AccessTokens(SECRET, "deepref", "deepref-api", 900)


def test_access_token_round_trip(tokens):
    user_id = uuid.uuid4()
    token = tokens.issue(user_id)
    assert tokens.subject(token) == user_id
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="deepref-api")
    assert claims["exp"] - claims["iat"] == 900


def _forge(claims, key=SECRET, algorithm="HS256"):
    return jwt.encode(claims, key, algorithm=algorithm)


def _claims(**overrides):
    now = datetime.now(UTC)
    base = {
        "sub": str(uuid.uuid4()),
        "iss": "deepref",
        "aud": "deepref-api",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "token_factory",
    [
        pytest.param(lambda: _forge(_claims(), key="another-secret-that-is-long-enough-000"), id="wrong-key"),
        pytest.param(lambda: _forge(_claims(iss="someone-else")), id="wrong-issuer"),
        pytest.param(lambda: _forge(_claims(aud="other-api")), id="wrong-audience"),
        pytest.param(lambda: _forge(_claims(sub=None)), id="no-subject"),
        pytest.param(lambda: _forge(_claims(iat=None)), id="no-iat"),
        pytest.param(lambda: _forge(_claims(sub="not-a-uuid")), id="bad-subject"),
        pytest.param(
            lambda: _forge(_claims(), algorithm="HS512"),
            id="other-algorithm",
            marks=pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
        ),
        pytest.param(lambda: jwt.encode(_claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
def test_forged_or_malformed_tokens_are_refused(tokens, token_factory):
    with pytest.raises(AuthenticationFailed, match="invalid"):
        tokens.subject(token_factory())


def test_tampered_payload_is_refused(tokens):
    header, _payload, signature = tokens.issue(uuid.uuid4()).split(".")
    _other_header, other_payload, _ = tokens.issue(uuid.uuid4()).split(".")
    with pytest.raises(AuthenticationFailed):
        tokens.subject(f"{header}.{other_payload}.{signature}")


def test_expired_token_says_so(tokens):
    expired = _forge(_claims(iat=datetime.now(UTC) - timedelta(hours=1), exp=datetime.now(UTC) - timedelta(minutes=1)))
    with pytest.raises(AuthenticationFailed, match="expired"):
        tokens.subject(expired)


def test_password_rules():
    assert password_problem("short") == "must be at least 10 characters"
    assert password_problem("é" * 37) == "must be at most 72 bytes in UTF-8"
    assert password_problem("a" * 72) is None


def test_password_hashing_and_equal_work_for_misses():
    hasher = PasswordHasher(4)
    hashed = hasher.hash("correct horse battery")
    assert hasher.verify("correct horse battery", hashed)
    assert not hasher.verify("wrong horse battery", hashed)
    assert not hasher.verify("correct horse battery", None)
    # Over 72 bytes: no exception from bcrypt, just a miss.
    assert not hasher.verify("correct horse battery" + "x" * 80, hashed)
    started = time.perf_counter()
    hasher.verify("anything at all", None)
    assert time.perf_counter() - started > 0  # a bcrypt check really ran against the decoy


def test_hashing_in_gevents_thread_pool_leaves_the_loop_serving():
    import gevent

    hasher = PasswordHasher(12, offload=gevent.get_hub().threadpool.apply)
    ticks: list[int] = []

    def ticker() -> None:
        while True:
            ticks.append(1)
            gevent.sleep(0.005)

    other = gevent.spawn(ticker)
    hashed = hasher.hash("correct horse battery staple")  # ~250 ms in a native thread
    checked = hasher.verify("correct horse battery staple", hashed)
    other.kill()
    assert checked and not hasher.verify("wrong horse battery staple", hashed)
    # The other greenlet kept running while bcrypt worked (in place, it would not have run at all).
    assert len(ticks) > 10


def test_a_token_accepted_before_is_refused_once_it_has_expired():
    short_lived = AccessTokens(SECRET, "deepref", "deepref-api", 1)
    token = short_lived.issue(uuid.uuid4())
    short_lived.subject(token)
    time.sleep(1.1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        short_lived.subject(token)


def test_a_tampered_copy_of_an_accepted_token_is_refused(tokens):
    token = tokens.issue(uuid.uuid4())
    tokens.subject(token)
    header, payload, signature = token.split(".")
    _, other_payload, _ = tokens.issue(uuid.uuid4()).split(".")
    with pytest.raises(AuthenticationFailed, match="invalid"):
        tokens.subject(f"{header}.{other_payload}.{signature}")
    with pytest.raises(AuthenticationFailed, match="invalid"):
        tokens.subject(f"{header}.{payload}.{signature[:-2]}")


def test_the_tokens_remembered_are_bounded_and_the_oldest_are_checked_again():
    tokens = AccessTokens(SECRET, "deepref", "deepref-api", 900, kept=2)
    users = [uuid.uuid4() for _ in range(3)]
    issued = [tokens.issue(user) for user in users]
    assert [tokens.subject(token) for token in issued] == users
    assert len(tokens._verified) == 2 and issued[0] not in tokens._verified
    assert tokens.subject(issued[0]) == users[0]
