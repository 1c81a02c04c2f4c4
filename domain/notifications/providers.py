"""Email and SMS providers: the network clients and the local file outboxes.

Every provider raises TransientDeliveryError (try again later) or PermanentDeliveryError
(trying again cannot help). Their messages are short and name no recipient and no body,
because they end up in logs and in `notifications.last_error`.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from domain.core.config import Settings
from domain.core.errors import PermanentFault, TransientFault

SMTP_TIMEOUT_SECONDS = 10.0
# (connect, read) seconds for the SMS API.
HTTP_TIMEOUT_SECONDS = (3.05, 10.0)


class DeliveryError(Exception):
    """A message was not handed to the provider."""


class TransientDeliveryError(DeliveryError, TransientFault):
    """The provider could not take the message now (down, overloaded, 5xx, 4xx SMTP): retry later."""


class PermanentDeliveryError(DeliveryError, PermanentFault):
    """The provider refused the message for good (bad recipient, 4xx API answer): do not retry."""


@dataclass(frozen=True)
class Email:
    """One email to send; `idempotency_key` makes the Message-ID (and outbox file) stable across retries."""

    to: str
    subject: str
    text: str
    html: str | None = None
    idempotency_key: str | None = None


class EmailProvider(Protocol):
    def send(self, message: Email) -> str:
        """Hand `message` over; return the provider's message id (the Message-ID header)."""
        ...


class SmsProvider(Protocol):
    def send(self, to: str, body: str, *, idempotency_key: str | None = None) -> str:
        """Hand the SMS over; return the provider's message id."""
        ...


def build_mime(message: Email, sender: str) -> EmailMessage:
    """The MIME message: plain text, plus an HTML alternative when there is one."""
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "deepref.local"
    if message.idempotency_key:
        mime["Message-ID"] = f"<{message.idempotency_key}@{domain}>"
    else:
        mime["Message-ID"] = make_msgid(domain=domain)
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    return mime


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect, parsed from SMTP_URL."""

    host: str
    port: int
    security: str  # "plain", "starttls" or "tls" (implicit, smtps://)
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        """Parse `smtp://user:pass@host:port`, `smtp+starttls://…`, `smtp://…?starttls=true` or `smtps://…`."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["false"])[-1].lower() in ("1", "true", "yes")
        if parts.scheme == "smtps":
            security, default_port = "tls", 465
        elif parts.scheme == "smtp+starttls" or (parts.scheme == "smtp" and starttls):
            security, default_port = "starttls", 587
        elif parts.scheme == "smtp":
            security, default_port = "plain", 25
        else:
            raise ValueError("SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if not parts.hostname:
            raise ValueError("SMTP_URL has no host")
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpEmailProvider:
    """Sends mail through an SMTP server (smtplib), with STARTTLS or implicit TLS when asked."""

    def __init__(
        self,
        url: str,
        sender: str,
        *,
        timeout: float = SMTP_TIMEOUT_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = SmtpTarget.from_url(url)
        self.sender = sender
        self.timeout = timeout
        # The default context verifies the server against the system CAs (or SSL_CERT_FILE).
        self.ssl_context = ssl_context or ssl.create_default_context()

    def send(self, message: Email) -> str:
        """Send `message`; return its Message-ID.

        Raises PermanentDeliveryError when the server refuses the recipient or the
        message with a 5xx reply, TransientDeliveryError for anything else (unreachable,
        timeout, TLS or login failure, 4xx reply).
        """
        mime = build_mime(message, self.sender)
        try:
            smtp = self._connect()
            try:
                smtp.send_message(mime)
            finally:
                _quit_quietly(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _by_code(codes[-1], f"smtp recipient refused ({codes[-1]})") from None
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            raise _by_code(exc.smtp_code, f"smtp message refused ({exc.smtp_code})") from None
        except smtplib.SMTPAuthenticationError as exc:
            # A configuration fault: retrying ends in a dead operation and an admin alert.
            raise TransientDeliveryError(f"smtp login failed ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(f"smtp unavailable ({type(exc).__name__})") from None
        return str(mime["Message-ID"])

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        smtp: smtplib.SMTP
        if target.security == "tls":
            smtp = smtplib.SMTP_SSL(target.host, target.port, timeout=self.timeout, context=self.ssl_context)
        else:
            smtp = smtplib.SMTP(target.host, target.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if target.security == "starttls":
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()
            if target.username is not None:
                smtp.login(target.username, target.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """Say goodbye; the message is already accepted, so a failing QUIT must not look like a failed send."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _by_code(code: int, description: str) -> DeliveryError:
    return PermanentDeliveryError(description) if code >= 500 else TransientDeliveryError(description)


def _write_atomically(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` to `directory/name` so that readers never see a partial file (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        path = directory / name
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _file_name(idempotency_key: str | None) -> str:
    """Ordered by time; a retried message (same key) overwrites its first file instead of adding one."""
    if idempotency_key:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in idempotency_key)
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


class FileEmailOutbox:
    """Writes each email as an .eml file under `directory` (the default without SMTP_URL)."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, message: Email) -> str:
        """Write `message` to `<directory>/<name>.eml`; return its Message-ID.

        Raises TransientDeliveryError when the file cannot be written.
        """
        mime = build_mime(message, self.sender)
        try:
            _write_atomically(self.directory, _file_name(message.idempotency_key) + ".eml", mime.as_bytes())
        except OSError as exc:
            raise TransientDeliveryError(f"mail outbox not writable ({type(exc).__name__})") from None
        return str(mime["Message-ID"])


class FileSmsOutbox:
    """Writes each SMS as a JSON file under `directory` (the default SMS provider)."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, to: str, body: str, *, idempotency_key: str | None = None) -> str:
        """Write the SMS to `<directory>/<name>.json`; return its id.

        Raises TransientDeliveryError when the file cannot be written.
        """
        message_id = f"file-{idempotency_key or uuid.uuid4()}"
        record = {
            "id": message_id,
            "to": to,
            "from": self.sender,
            "body": body,
            "createdAt": datetime.now(UTC).isoformat(),
        }
        try:
            _write_atomically(self.directory, _file_name(idempotency_key) + ".json", json.dumps(record).encode())
        except OSError as exc:
            raise TransientDeliveryError(f"sms outbox not writable ({type(exc).__name__})") from None
        return message_id


class TwilioSmsProvider:
    """Sends SMS through the Twilio Messages REST API (or anything speaking it)."""

    def __init__(
        self,
        api_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        timeout: tuple[float, float] = HTTP_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
    ) -> None:
        self.endpoint = f"{api_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = (account_sid, auth_token)
        self.sender = sender
        self.timeout = timeout
        self.http = session or requests.Session()

    def send(self, to: str, body: str, *, idempotency_key: str | None = None) -> str:
        """POST the message; return Twilio's message sid.

        Raises TransientDeliveryError when the API is unreachable, times out, answers 5xx,
        429 or 401, and PermanentDeliveryError for any other 4xx (bad number, bad request).
        `idempotency_key` is not sent: this API has no such field.
        """
        try:
            response = self.http.post(
                self.endpoint,
                data={"To": to, "From": self.sender, "Body": body},
                auth=self.auth,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"sms api unavailable ({type(exc).__name__})") from None
        # 429 is back-pressure and 401 a credentials fault fixed by an operator: both worth retrying.
        if response.status_code >= 500 or response.status_code in (401, 429):
            raise TransientDeliveryError(f"sms api answered {response.status_code}")
        if response.status_code >= 400:
            # Twilio's error text may quote the number: keep only its numeric error code.
            raise PermanentDeliveryError(f"sms api refused ({response.status_code}, code {_error_code(response)})")
        # Accepted: retrying would send it twice, so an unreadable answer is not a failure.
        return _json_field(response, "sid") or "unknown"


def _error_code(response: requests.Response) -> str:
    code = _json_field(response, "code")
    return code if code and code.isdigit() else "none"


def _json_field(response: requests.Response, name: str) -> str | None:
    try:
        value: Any = response.json()[name]
    except (ValueError, KeyError, TypeError):
        return None
    return None if value is None else str(value)[:64]


def email_provider(settings: Settings) -> EmailProvider:
    """The configured email provider: SMTP when SMTP_URL is set, else the file outbox under var/mail/."""
    if settings.smtp_url:
        return SmtpEmailProvider(settings.smtp_url, settings.email_from)
    return FileEmailOutbox(settings.var_dir / "mail", settings.email_from)


def sms_provider(settings: Settings) -> SmsProvider:
    """The configured SMS provider: Twilio when SMS_PROVIDER=twilio, else the file outbox under var/sms/."""
    if settings.sms_provider == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token  # enforced by Settings
        return TwilioSmsProvider(
            settings.twilio_api_url, settings.twilio_account_sid, settings.twilio_auth_token, settings.sms_from
        )
    return FileSmsOutbox(settings.var_dir / "sms", settings.sms_from)
