"""Local stand-ins for the external providers, speaking their real protocols.

- `SmtpSink` (tests/fakes/smtp.py): an aiosmtpd SMTP server, optionally STARTTLS /
  implicit TLS and AUTH; received mail in `.messages`, `.wait_for(n)`.
- `FakeTwilio` (tests/fakes/twilio.py): the Twilio Messages REST API; accepted SMS in
  `.messages`, every request in `.requests`, `.fail_next(status)`.
- `mail_outbox(var_dir)` / `sms_outbox(var_dir)`: what the file providers wrote.

Both servers have `.environment()` (variables for a worker process) and are context
managers. The pytest fixtures below are available to any test module that lists
`pytest_plugins = ["tests.fakes"]` in the root conftest (or imports them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.smtp import ReceivedMail, SmtpSink
from tests.fakes.twilio import FakeTwilio, RecordedRequest, SentSms

__all__ = [
    "FakeOpenRouter",
    "FakeTwilio",
    "ReceivedMail",
    "RecordedRequest",
    "SentSms",
    "SmtpSink",
    "fake_openrouter",
    "fake_twilio",
    "mail_outbox",
    "sms_outbox",
    "smtp_sink",
]


def mail_outbox(var_dir: Path) -> list[EmailMessage]:
    """The emails the file outbox wrote under `var_dir/mail/`, oldest first."""
    paths = sorted((var_dir / "mail").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    messages = [message_from_bytes(path.read_bytes(), policy=policy.default) for path in paths]
    return [m for m in messages if isinstance(m, EmailMessage)]


def sms_outbox(var_dir: Path) -> list[dict[str, Any]]:
    """The SMS the file outbox wrote under `var_dir/sms/` ({"id", "to", "from", "body", "createdAt"}), oldest first."""
    paths = sorted((var_dir / "sms").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(path.read_text()) for path in paths]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain SMTP sink (no TLS, no AUTH) for the duration of the test."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A Twilio Messages API fake for the duration of the test."""
    with FakeTwilio() as twilio:
        yield twilio


@pytest.fixture
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    """An OpenRouter chat-completions fake (tests/fakes/openrouter.py) for the duration of the test."""
    with FakeOpenRouter() as openrouter:
        yield openrouter
