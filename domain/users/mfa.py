"""Time-based one-time passwords (RFC 6238) for two-factor login."""

from __future__ import annotations

import hmac
import time

import pyotp

from domain.users.models import User

ISSUER = "DeepRef"
# Accept the previous and next 30-second step too, for clock drift.
VALID_WINDOW = 1
STEP_SECONDS = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def accept_code(user: User, code: str, now: float | None = None) -> bool:
    """Check a TOTP code against the user's secret; a code is accepted at most once."""
    secret = user.mfa_secret
    if not secret or not code.isdigit():
        return False
    at = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    current = int(at // STEP_SECONDS)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code) and step > (user.mfa_last_step or -1):
            user.mfa_last_step = step
            return True
    return False
