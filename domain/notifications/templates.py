"""The text of every message we send.

A template has an email form (subject, plain text, HTML) and/or an SMS form (text).
Placeholders are `$name` / `${name}` (`string.Template`); values are inserted as text,
HTML-escaped in the HTML part, and every placeholder must be given a value. Adding a
message is one `register(...)` call below.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from typing import Any

from domain.notifications.models import Channel


class TemplateError(LookupError):
    """A message cannot be rendered: unknown template, missing channel or missing value."""


@dataclass(frozen=True)
class EmailForm:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Rendered:
    """A rendered message; `subject` and `html` are None for SMS."""

    text: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class MessageTemplate:
    name: str
    email: EmailForm | None = None
    sms: str | None = None

    def parts(self, channel: Channel) -> tuple[str, ...]:
        """The raw template strings for `channel`; raises TemplateError when it has no such form."""
        if channel is Channel.EMAIL and self.email is not None:
            return (self.email.subject, self.email.text, self.email.html)
        if channel is Channel.SMS and self.sms is not None:
            return (self.sms,)
        raise TemplateError(f"template {self.name!r} has no {channel.value} form")

    def placeholders(self, channel: Channel) -> set[str]:
        return {name for part in self.parts(channel) for name in Template(part).get_identifiers()}


_HTML_LAYOUT = Template(
    "<!DOCTYPE html>\n"
    '<html><head><meta charset="utf-8"><title>$title</title></head>\n'
    '<body style="font-family: sans-serif; line-height: 1.5;">\n$content\n'
    '<p style="color: #777; font-size: 12px;">DeepRef</p>\n</body></html>\n'
)

TEMPLATES: dict[str, MessageTemplate] = {}


def register(name: str, *, email: EmailForm | None = None, sms: str | None = None) -> MessageTemplate:
    """Add a message template (its placeholders are checked when it is rendered)."""
    if name in TEMPLATES:
        raise ValueError(f"template {name!r} is already registered")
    if email is None and sms is None:
        raise ValueError(f"template {name!r} needs an email or an SMS form")
    TEMPLATES[name] = MessageTemplate(name, email, sms)
    return TEMPLATES[name]


def render(name: str, channel: Channel, context: Mapping[str, Any]) -> Rendered:
    """Render template `name` for `channel` with `context`.

    Raises TemplateError naming the template for an unknown template, a channel the
    template has no form for, or a placeholder without a value.
    """
    template = TEMPLATES.get(name)
    if template is None:
        raise TemplateError(f"unknown template {name!r}")
    missing = template.placeholders(channel) - context.keys()
    if missing:
        raise TemplateError(f"template {name!r} needs values for: {', '.join(sorted(missing))}")
    values = {key: str(value) for key, value in context.items()}
    parts = template.parts(channel)
    if channel is Channel.SMS:
        return Rendered(text=Template(parts[0]).substitute(values))
    subject_part, text_part, html_part = parts
    subject = _one_line(Template(subject_part).substitute(values))
    escaped = {key: html.escape(value) for key, value in values.items()}
    return Rendered(
        text=Template(text_part).substitute(values),
        subject=subject,
        html=_HTML_LAYOUT.substitute(title=html.escape(subject), content=Template(html_part).substitute(escaped)),
    )


def _one_line(value: str) -> str:
    """Subjects are headers: a newline in a value must not start a new header."""
    return re.sub(r"\s+", " ", value).strip()


register(
    "verification_code",
    email=EmailForm(
        subject="Your DeepRef verification code: $code",
        text=(
            "Your DeepRef verification code is $code\n\n"
            "It is valid for $minutes minutes. If you did not ask for it, ignore this email.\n"
        ),
        html=(
            "<p>Your DeepRef verification code is</p>\n"
            '<p style="font-size: 24px; font-weight: bold; letter-spacing: 4px;">$code</p>\n'
            "<p>It is valid for $minutes minutes. If you did not ask for it, ignore this email.</p>"
        ),
    ),
    sms="Your DeepRef verification code is $code (valid for $minutes minutes).",
)

register(
    "phone_verification_code",
    sms="DeepRef: $code is your code to confirm this phone number. It is valid for $minutes minutes.",
)

register(
    "operation_dead",
    email=EmailForm(
        subject="[DeepRef alert] operation $operation_id ($kind) is dead",
        text=(
            "An operation gave up after its last attempt.\n\n"
            "Operation: $operation_id\nKind: $kind\nError code: $error_code\nAttempts: $attempts\n\n"
            "Its payload is kept; inspect it with GET /api/v1/operations/$operation_id.\n"
        ),
        html=(
            "<p>An operation gave up after its last attempt.</p>\n<table>\n"
            "<tr><th>Operation</th><td>$operation_id</td></tr>\n"
            "<tr><th>Kind</th><td>$kind</td></tr>\n"
            "<tr><th>Error code</th><td>$error_code</td></tr>\n"
            "<tr><th>Attempts</th><td>$attempts</td></tr>\n</table>\n"
            "<p>Its payload is kept; inspect it with GET /api/v1/operations/$operation_id.</p>"
        ),
    ),
)
