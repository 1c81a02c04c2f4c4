"""Password hashing with bcrypt, with equal work for unknown users and long passwords."""

from __future__ import annotations

import bcrypt

# bcrypt only reads the first 72 bytes; longer passwords are refused, never truncated.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 10


def password_problem(password: str) -> str | None:
    """Say what is wrong with a new password, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8"
    return None


class PasswordHasher:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        # Checked against when there is no real hash, so a miss costs what a hit costs.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode()

    def verify(self, password: str, hashed: str | None) -> bool:
        """True when `password` matches `hashed`; always spends one bcrypt check."""
        candidate = password.encode()
        usable = hashed is not None and len(candidate) <= MAX_PASSWORD_BYTES
        target = hashed.encode() if usable and hashed is not None else self._decoy
        matched = bcrypt.checkpw(candidate[:MAX_PASSWORD_BYTES], target)
        return usable and matched
