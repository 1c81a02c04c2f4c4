"""A local HTTP server speaking the Twilio Messages API (the part we use).

    with FakeTwilio() as twilio:
        settings = settings.model_copy(update=twilio.settings_update())
        ...
        [sms] = twilio.wait_for(1)
        assert sms.to == "+14155550100"

    twilio.fail_next(500)          # the next request gets a 500 (then back to normal)
    twilio.fail_next(400, times=2) # the next two get a 400 with Twilio error code 21211
    twilio.respond_next(201, b"")  # any status and body (bytes, or a JSON-able value)

It checks HTTP basic auth (account sid : auth token), the URL's account sid and the form
fields To / From (or MessagingServiceSid) / Body, answers 201 with a JSON message
resource, and records every request in `requests` and every accepted message in `messages`.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.served import HOST, ServedFake


@dataclass(frozen=True)
class SentSms:
    """A message the fake accepted."""

    sid: str
    to: str
    from_: str
    body: str


@dataclass(frozen=True)
class RecordedRequest:
    """Any request the fake answered, accepted or not."""

    method: str
    path: str
    credentials: tuple[str, str] | None  # decoded basic auth
    form: dict[str, str]
    status: int


class FakeTwilio(ServedFake):
    """See the module docstring."""

    name = "fake-twilio"

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.messages: list[SentSms] = []
        self.requests: list[RecordedRequest] = []
        self._scripted: list[tuple[int, Any]] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        """The TWILIO_API_URL that reaches this fake."""
        return f"http://{HOST}:{self.port}"

    @property
    def messages_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def environment(self) -> dict[str, str]:
        """Environment variables that point a process (e.g. a worker) at this fake."""
        return {
            "SMS_PROVIDER": "twilio",
            "TWILIO_API_URL": self.url,
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
        }

    def settings_update(self) -> dict[str, Any]:
        """The same, as a `Settings.model_copy(update=...)` argument."""
        return {
            "sms_provider": "twilio",
            "twilio_api_url": self.url,
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self.auth_token,
        }

    def fail_next(self, status: int, *, times: int = 1, code: int | None = None) -> None:
        """Answer the next `times` requests with `status` and Twilio error `code`."""
        default_code = 20500 if status >= 500 else 20003 if status == 401 else 21211
        self.respond_next(*_error(status, code or default_code, "Injected failure"), times=times)

    def respond_next(self, status: int, body: Any, *, times: int = 1) -> None:
        """Answer the next `times` authenticated requests with `status` and `body` (bytes are sent as is)."""
        with self._changed:
            self._scripted.extend([(status, body)] * times)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SentSms]:
        """Block until at least `count` messages were accepted; return them all (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} SMS, got {len(self.messages)}")
                self._changed.wait(remaining)
            return list(self.messages)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(_Handler):
            twilio = fake

        return Handler

    def _answer(self, path: str, credentials: tuple[str, str] | None, form: dict[str, str]) -> tuple[int, Any]:
        """Decide the response to one POST; record it (called from the server's threads)."""
        with self._changed:
            status, payload = self._decide(path, credentials, form)
            self.requests.append(RecordedRequest("POST", path, credentials, form, status))
            if status == 201 and isinstance(payload, dict):
                self.messages.append(SentSms(payload["sid"], form["To"], payload["from"], form["Body"]))
            self._changed.notify_all()
        return status, payload

    def _decide(self, path: str, credentials: tuple[str, str] | None, form: dict[str, str]) -> tuple[int, Any]:
        if path != self.messages_path:
            return _error(404, 20404, "The requested resource was not found")
        if credentials != (self.account_sid, self.auth_token):
            return _error(401, 20003, "Authenticate")
        if self._scripted:
            return self._scripted.pop(0)
        for field in ("To", "Body"):
            if not form.get(field):
                return _error(400, 21604 if field == "To" else 21602, f"A '{field}' parameter is required.")
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not sender:
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        now = format_datetime(datetime.now(UTC), usegmt=True)
        sid = "SM" + secrets.token_hex(16)
        return 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": sender,
            "body": form["Body"],
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "error_code": None,
            "error_message": None,
            "uri": f"{self.messages_path[:-5]}/{sid}.json",
        }


def _error(status: int, code: int, message: str) -> tuple[int, Any]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    twilio: FakeTwilio

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.headers.get_content_type() == "application/x-www-form-urlencoded":
            form = {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}
        else:
            form = {}
        status, payload = self.twilio._answer(self.path, _basic_auth(self.headers.get("Authorization")), form)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password
