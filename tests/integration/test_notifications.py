"""Email and SMS: templates, sealed notifications and delivery through real protocols."""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import stat
import uuid
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.core.config import Settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.errors import InvalidInput, NotFound, PermanentFault, TransientFault
from domain.core.logging import JsonFormatter
from domain.notifications import providers, service, templates
from domain.notifications.models import Channel, Notification, NotificationStatus
from domain.notifications.providers import (
    DeliveryError,
    Email,
    FileEmailOutbox,
    FileSmsOutbox,
    PermanentDeliveryError,
    SmtpEmailProvider,
    SmtpTarget,
    TransientDeliveryError,
    TwilioSmsProvider,
)
from domain.notifications.templates import TemplateError
from domain.operations.models import Operation
from domain.users.models import Role, User
from tests.fakes import FakeTwilio, SmtpSink, mail_outbox, sms_outbox

EMAIL = "ann.referee@example.com"
PHONE = "+14155550123"
CODE = "493817"
CONTEXT = {"code": CODE, "minutes": 15}


@pytest.fixture
def session(database: Database, keyring: KeyRing) -> Iterator[Session]:
    with database.session() as session:
        yield session


@pytest.fixture
def owner(session: Session, keyring: KeyRing) -> User:
    return make_user(session, keyring)


@pytest.fixture
def outboxes(settings: Settings, tmp_path) -> Settings:
    """Settings whose file outboxes write under this test's own directory."""
    return settings.model_copy(update={"var_dir": tmp_path, "smtp_url": None, "sms_provider": "file"})


def make_user(session: Session, keyring: KeyRing) -> User:
    email = f"owner-{uuid.uuid4().hex[:10]}@example.com"
    user = User(email_index=keyring.email_index(email), email=email, name="Olga Owner", role=Role.JOB_SEEKER)
    user.password_hash = "!"
    session.add(user)
    session.flush()
    return user


def compose_email(session: Session, owner: User, **overrides) -> Notification:
    arguments = {
        "owner": owner,
        "channel": Channel.EMAIL,
        "recipient": EMAIL,
        "template": "verification_code",
        "context": CONTEXT,
        **overrides,
    }
    return service.compose(session, **arguments)


def compose_sms(session: Session, owner: User) -> Notification:
    return service.compose(
        session, owner=owner, channel="sms", recipient=PHONE, template="phone_verification_code", context=CONTEXT
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reread(database: Database, notification_id: uuid.UUID) -> Notification:
    with database.session() as fresh:
        notification = fresh.get(Notification, notification_id)
        assert notification is not None
        return notification


# --- composing and storing ---------------------------------------------------------------


def test_raw_rows_hold_no_plaintext(session, owner, connection):
    mail = compose_email(session, owner)
    sms = compose_sms(session, owner)
    session.commit()
    rows = connection.execute(text("SELECT * FROM notifications WHERE owner_id = :id"), {"id": owner.id}).mappings()
    dump = b"".join(
        bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for row in rows for v in row.values()
    )
    for plaintext in (b"ann.referee", b"example.com", CODE.encode(), b"14155550123", b"verification code is"):
        assert plaintext not in dump
    assert b"verification_code" in dump  # the template name is not personal data
    # Read back through the model, the same rows decrypt with the owner's data key.
    assert (mail.recipient, sms.recipient) == (EMAIL, PHONE)
    assert CODE in mail.body_text and CODE in mail.body_html and CODE in mail.subject
    assert CODE in sms.body_text and (sms.subject, sms.body_html) == (None, None)
    assert (mail.status, mail.attempts, mail.channel) == (NotificationStatus.PENDING, 0, Channel.EMAIL)


def test_ciphertext_moved_to_another_row_does_not_open(session, owner, connection, database):
    first, second = compose_email(session, owner), compose_sms(session, owner)
    session.commit()
    connection.execute(
        text("UPDATE notifications SET recipient = (SELECT recipient FROM notifications WHERE id = :a) WHERE id = :b"),
        {"a": first.id, "b": second.id},
    )
    # Undecryptable is never sent (to a wrong address): it fails for good.
    with database.session() as fresh, pytest.raises(PermanentDeliveryError, match="unreadable"):
        service.deliver(fresh, second.id, email=NoEmail(), sms=NoSms())


class NoEmail:
    """A provider that must not be reached."""

    def send(self, message: Email) -> str:
        raise AssertionError("nothing may be sent")


class NoSms:
    """A provider that must not be reached."""

    def send(self, to: str, body: str, *, idempotency_key: str | None = None) -> str:
        raise AssertionError("nothing may be sent")


def test_composing_twice_for_one_operation_finds_the_first_row(session, owner):
    operation = Operation(user_id=owner.id, kind="user.email_verification")
    session.add(operation)
    session.flush()
    first = compose_email(session, owner, operation_id=operation.id)
    again = compose_email(session, owner, operation_id=operation.id, context={"code": "000000", "minutes": 1})
    assert again.id == first.id and CODE in again.body_text
    assert session.query(Notification).filter_by(operation_id=operation.id).count() == 1


def test_a_concurrent_compose_that_lost_the_race_returns_the_winner(session, owner, monkeypatch):
    operation = Operation(user_id=owner.id, kind="user.email_verification")
    session.add(operation)
    session.flush()
    winner = compose_email(session, owner, operation_id=operation.id)
    session.commit()
    original, calls = service._for_operation, []

    def first_look_misses(session: Session, operation_id: uuid.UUID) -> Notification | None:
        calls.append(operation_id)  # the loser's first look happened before the winner committed
        return None if len(calls) == 1 else original(session, operation_id)

    monkeypatch.setattr(service, "_for_operation", first_look_misses)
    assert compose_email(session, owner, operation_id=operation.id).id == winner.id
    assert len(calls) == 2


def test_compose_for_an_unknown_operation_fails(session, owner):
    with pytest.raises(IntegrityError, match="foreign key"):
        compose_email(session, owner, operation_id=uuid.uuid4())


def test_compose_for_a_vanished_owner_fails(session, owner, connection):
    connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": owner.id})
    compose_email(session, owner)  # written with the caller's transaction, which then fails
    with pytest.raises(IntegrityError, match="foreign key"):
        session.flush()


@pytest.mark.parametrize(
    ("channel", "recipient", "field"),
    [
        ("email", "not-an-address", "email"),
        ("email", "a@b@c", "email"),
        ("sms", "4155550123", "phone"),
        ("sms", "+0123", "phone"),
    ],
)
def test_malformed_recipients_are_refused_without_echoing_them(session, owner, channel, recipient, field):
    with pytest.raises(InvalidInput) as caught:
        service.compose(
            session, owner=owner, channel=channel, recipient=recipient, template="verification_code", context=CONTEXT
        )
    assert caught.value.message.startswith(f"{field}:")
    assert recipient not in caught.value.message


def test_recipients_are_normalised():
    assert service.normalise_recipient(Channel.SMS, "+1 (415) 555-0123") == PHONE
    assert service.normalise_recipient(Channel.EMAIL, "  Ann.Referee@EXAMPLE.com ") == "Ann.Referee@example.com"


# --- templates ---------------------------------------------------------------------------


def test_unknown_template_is_a_clear_error(session, owner):
    with pytest.raises(TemplateError, match="unknown template 'no_such_message'"):
        compose_email(session, owner, template="no_such_message")


def test_missing_value_names_the_placeholder():
    with pytest.raises(TemplateError, match="'verification_code' needs values for: minutes"):
        templates.render("verification_code", Channel.EMAIL, {"code": CODE})


def test_template_without_the_channel_is_an_error():
    with pytest.raises(TemplateError, match="'operation_dead' has no sms form"):
        templates.render("operation_dead", Channel.SMS, {})
    with pytest.raises(TemplateError, match="'phone_verification_code' has no email form"):
        templates.render("phone_verification_code", Channel.EMAIL, CONTEXT)


def test_values_are_escaped_in_html_only_and_subjects_stay_one_line():
    rendered = templates.render("verification_code", Channel.EMAIL, {"code": "<b>&1</b>\nBcc: x", "minutes": 5})
    assert "&lt;b&gt;&amp;1&lt;/b&gt;" in rendered.html and "<b>&1" not in rendered.html
    assert "<b>&1</b>" in rendered.text
    assert "\n" not in rendered.subject and rendered.subject.endswith("<b>&1</b> Bcc: x")


def test_verification_code_has_every_form():
    email = templates.render("verification_code", Channel.EMAIL, CONTEXT)
    assert CODE in email.subject and "15 minutes" in email.text and "15 minutes" in email.html
    assert email.html.startswith("<!DOCTYPE html>")
    assert templates.render("verification_code", Channel.SMS, CONTEXT).text == (
        f"Your DeepRef verification code is {CODE} (valid for 15 minutes)."
    )
    phone = templates.render("phone_verification_code", Channel.SMS, CONTEXT)
    assert CODE in phone.text and phone.subject is None and phone.html is None


def test_operation_dead_alert_carries_ids_only():
    operation_id = str(uuid.uuid4())
    rendered = templates.render(
        "operation_dead",
        Channel.EMAIL,
        {"operation_id": operation_id, "kind": "reference.verify", "error_code": "timeout", "attempts": 5},
    )
    assert operation_id in rendered.subject and "reference.verify" in rendered.subject
    for part in (rendered.text, rendered.html):
        assert operation_id in part and "timeout" in part and "5" in part


def test_registering_templates(monkeypatch):
    monkeypatch.setattr(templates, "TEMPLATES", dict(templates.TEMPLATES))
    templates.register("test_reminder", sms="$name, a reminder: $link")
    assert templates.render("test_reminder", Channel.SMS, {"name": "Ann", "link": "L"}).text == "Ann, a reminder: L"
    with pytest.raises(ValueError, match="already registered"):
        templates.register("test_reminder", sms="again")
    with pytest.raises(ValueError, match="needs an email or an SMS form"):
        templates.register("empty")


# --- SMTP ---------------------------------------------------------------------------------


def test_smtp_delivery_reaches_the_server_with_text_and_html(session, owner, smtp_sink, settings):
    notification = compose_email(session, owner)
    provider = SmtpEmailProvider(smtp_sink.url, settings.email_from)
    sent = service.deliver(session, notification.id, email=provider, sms=NoSms())
    [mail] = smtp_sink.messages
    assert mail.rcpt_tos == [EMAIL] and mail.message["To"] == EMAIL
    assert mail.mail_from == "no-reply@deepref.local" and mail.login is None and not mail.tls
    assert CODE in mail.subject and CODE in mail.text and CODE in mail.html
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.message_id == f"<{notification.id}@deepref.local>"
    assert sent.status == NotificationStatus.SENT and sent.provider_message_id == mail.message_id
    assert sent.attempts == 1 and sent.sent_at is not None and sent.last_error is None


def test_smtp_starttls_and_auth_from_settings(session, owner, settings, monkeypatch):
    with SmtpSink(starttls=True, auth=("mailer", "p@ss/word")) as sink:
        assert sink.url.startswith("smtp+starttls://")
        monkeypatch.setenv("SSL_CERT_FILE", sink.environment()["SSL_CERT_FILE"])  # how a worker trusts it
        assert "mailer:p%40ss%2Fword@" in sink.url
        provider = providers.email_provider(settings.model_copy(update={"smtp_url": sink.url}))
        assert isinstance(provider, SmtpEmailProvider) and provider.target.security == "starttls"
        service.deliver(session, compose_email(session, owner).id, email=provider, sms=NoSms())
        [mail] = sink.messages
    assert mail.tls and mail.login == "mailer" and CODE in mail.text


def test_smtp_starttls_by_query_parameter(settings):
    with SmtpSink(starttls=True) as sink:
        url = f"smtp://127.0.0.1:{sink.port}?starttls=true"
        provider = SmtpEmailProvider(url, settings.email_from, ssl_context=sink.client_ssl_context())
        message_id = provider.send(Email(to=EMAIL, subject="Hi", text="plain only"))
        [mail] = sink.messages
    assert mail.tls and mail.message_id == message_id and mail.html is None and mail.text.strip() == "plain only"


def test_smtps_implicit_tls_with_auth(settings):
    with SmtpSink(implicit_tls=True, auth=("mailer", "secret")) as sink:
        provider = SmtpEmailProvider(sink.url, settings.email_from, ssl_context=sink.client_ssl_context())
        provider.send(Email(to=EMAIL, subject="Hi", text="t", html="<p>h</p>"))
        [mail] = sink.messages
    assert mail.tls and mail.login == "mailer" and mail.html.strip() == "<p>h</p>"


def test_an_untrusted_certificate_is_not_accepted(settings):
    with SmtpSink(starttls=True) as sink:
        provider = SmtpEmailProvider(sink.url, settings.email_from)  # system CAs only
        with pytest.raises(TransientDeliveryError, match="smtp unavailable"):
            provider.send(Email(to=EMAIL, subject="Hi", text="t"))
        assert sink.messages == []


def test_wrong_smtp_password_is_retried_not_dropped(settings):
    with SmtpSink(implicit_tls=True, auth=("mailer", "secret")) as sink:
        url = f"smtps://mailer:wrong@127.0.0.1:{sink.port}"
        provider = SmtpEmailProvider(url, settings.email_from, ssl_context=sink.client_ssl_context())
        with pytest.raises(TransientDeliveryError, match=r"smtp login failed \(535\)"):
            provider.send(Email(to=EMAIL, subject="Hi", text="t"))
        assert sink.failed_logins >= 1 and sink.messages == []


def test_smtp_server_down_is_transient_and_the_attempt_is_kept(session, owner, database, settings):
    notification = compose_email(session, owner)
    session.commit()
    provider = SmtpEmailProvider(f"smtp://127.0.0.1:{free_port()}", settings.email_from, timeout=2)
    with pytest.raises(TransientDeliveryError, match="smtp unavailable") as caught:
        service.deliver(session, notification.id, email=provider, sms=NoSms())
    assert isinstance(caught.value, TransientFault)  # what the task layer retries
    session.commit()  # as deliver() asks: commit, then let the error drive the retry
    stored = reread(database, notification.id)
    assert (stored.status, stored.attempts, stored.last_error) == (
        NotificationStatus.PENDING,
        1,
        "smtp unavailable (ConnectionRefusedError)",
    )


def test_the_task_pattern_keeps_the_bookkeeping_of_a_failed_attempt(session, owner, database, fake_twilio, settings):
    notification = compose_sms(session, owner)
    session.commit()
    fake_twilio.fail_next(503)
    with pytest.raises(TransientDeliveryError), database.transaction() as tx:
        try:
            service.deliver(tx, notification.id, email=NoEmail(), sms=twilio_provider(settings, fake_twilio))
        except DeliveryError:
            tx.commit()  # what a task does before letting the error drive the retry
            raise
    stored = reread(database, notification.id)
    assert (stored.status, stored.attempts, stored.last_error) == (
        NotificationStatus.PENDING,
        1,
        "sms api answered 503",
    )


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 <ann.referee@example.com>: no such user", PermanentDeliveryError),
        ("451 4.3.0 try later", TransientDeliveryError),
    ],
)
def test_smtp_recipient_refusals(session, owner, smtp_sink, settings, reply, error):
    smtp_sink.rcpt_reply = reply
    notification = compose_email(session, owner)
    provider = SmtpEmailProvider(smtp_sink.url, settings.email_from)
    with pytest.raises(error, match="smtp recipient refused") as caught:
        service.deliver(session, notification.id, email=provider, sms=NoSms())
    assert "ann.referee" not in str(caught.value) and notification.last_error == str(caught.value)
    expected = NotificationStatus.FAILED if error is PermanentDeliveryError else NotificationStatus.PENDING
    assert notification.status == expected and notification.attempts == 1


def test_a_permanent_failure_is_not_retried(session, owner, smtp_sink, settings):
    smtp_sink.data_reply = "554 5.6.0 message refused"
    notification = compose_email(session, owner)
    provider = SmtpEmailProvider(smtp_sink.url, settings.email_from)
    with pytest.raises(PermanentDeliveryError, match=r"smtp message refused \(554\)") as caught:
        service.deliver(session, notification.id, email=provider, sms=NoSms())
    assert isinstance(caught.value, PermanentFault)
    smtp_sink.data_reply = None
    with pytest.raises(PermanentDeliveryError, match=r"smtp message refused \(554\)"):
        service.deliver(session, notification.id, email=provider, sms=NoSms())
    assert notification.attempts == 1 and notification.status == NotificationStatus.FAILED
    assert smtp_sink.messages == []


def test_delivering_again_sends_nothing(session, owner, smtp_sink, settings, database):
    notification = compose_email(session, owner)
    provider = SmtpEmailProvider(smtp_sink.url, settings.email_from)
    first = service.deliver(session, notification.id, email=provider, sms=NoSms())
    session.commit()
    with database.session() as other:  # e.g. the redelivered task in another worker
        again = service.deliver(other, notification.id, email=provider, sms=NoSms())
        assert (again.attempts, again.provider_message_id, again.sent_at) == (
            1,
            first.provider_message_id,
            first.sent_at,
        )
    assert len(smtp_sink.messages) == 1


def test_deliver_unknown_notification(session):
    with pytest.raises(NotFound):
        service.deliver(session, uuid.uuid4(), email=NoEmail(), sms=NoSms())


def test_a_failing_quit_after_acceptance_is_not_a_failed_send():
    providers._quit_quietly(smtplib.SMTP())  # never connected: QUIT raises, the connection is just closed


def test_smtp_urls():
    target = SmtpTarget.from_url("smtp://u%40x:p%3Aw@mail.example.com")
    assert (target.host, target.port, target.security, target.username, target.password) == (
        "mail.example.com",
        25,
        "plain",
        "u@x",
        "p:w",
    )
    assert SmtpTarget.from_url("smtp+starttls://mail.example.com").port == 587
    assert SmtpTarget.from_url("smtps://mail.example.com").port == 465
    assert SmtpTarget.from_url("smtp://mail.example.com:2525?starttls=false").security == "plain"
    with pytest.raises(ValueError, match="must start with"):
        SmtpTarget.from_url("http://mail.example.com")
    with pytest.raises(ValueError, match="no host"):
        SmtpTarget.from_url("smtp://")


# --- file outboxes ------------------------------------------------------------------------


def test_file_outboxes_are_the_defaults_and_write_one_file_per_message(session, owner, outboxes, tmp_path):
    email, sms = providers.email_provider(outboxes), providers.sms_provider(outboxes)
    assert isinstance(email, FileEmailOutbox) and isinstance(sms, FileSmsOutbox)
    mail_notification, sms_notification = compose_email(session, owner), compose_sms(session, owner)
    sent_mail = service.deliver(session, mail_notification.id, email=email, sms=sms)
    sent_sms = service.deliver(session, sms_notification.id, email=email, sms=sms)
    [mail] = mail_outbox(tmp_path)
    assert mail["To"] == EMAIL and mail["Message-ID"] == sent_mail.provider_message_id
    assert CODE in mail.get_body(("plain",)).get_content() and CODE in mail.get_body(("html",)).get_content()
    [text_message] = sms_outbox(tmp_path)
    assert (text_message["to"], text_message["from"], text_message["id"]) == (
        PHONE,
        "DeepRef",
        sent_sms.provider_message_id,
    )
    assert CODE in text_message["body"]
    for path in [*tmp_path.glob("mail/*"), *tmp_path.glob("sms/*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.name.startswith(".tmp")


def test_file_outbox_retry_with_the_same_key_overwrites(tmp_path):
    outbox = FileEmailOutbox(tmp_path / "mail", "DeepRef <no-reply@deepref.local>")
    message = Email(to=EMAIL, subject="Hi", text="t", idempotency_key="same-key")
    assert outbox.send(message) == outbox.send(message) == "<same-key@deepref.local>"
    outbox.send(Email(to=EMAIL, subject="Other", text="t"))
    sms = FileSmsOutbox(tmp_path / "sms", "DeepRef")
    sms.send(PHONE, "a", idempotency_key="k")
    sms.send(PHONE, "b", idempotency_key="k")
    assert len(mail_outbox(tmp_path)) == 2 and [m["body"] for m in sms_outbox(tmp_path)] == ["b"]


def test_unwritable_outbox_is_transient(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(TransientDeliveryError, match="mail outbox not writable"):
        FileEmailOutbox(blocker / "mail", "x@example.com").send(Email(to=EMAIL, subject="s", text="t"))
    with pytest.raises(TransientDeliveryError, match="sms outbox not writable"):
        FileSmsOutbox(blocker / "sms", "DeepRef").send(PHONE, "t")
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_failed_outbox_write_leaves_no_partial_file(tmp_path):
    (tmp_path / "mail" / "taken.eml").mkdir(parents=True)  # the final name cannot be replaced
    with pytest.raises(TransientDeliveryError, match=r"not writable \(IsADirectoryError\)"):
        FileEmailOutbox(tmp_path / "mail", "x@example.com").send(
            Email(to=EMAIL, subject="s", text="t", idempotency_key="taken")
        )
    assert [p.name for p in (tmp_path / "mail").iterdir()] == ["taken.eml"]


# --- Twilio -------------------------------------------------------------------------------


def twilio_provider(settings: Settings, twilio: FakeTwilio) -> providers.SmsProvider:
    return providers.sms_provider(settings.model_copy(update=twilio.settings_update()))


def test_twilio_delivery(session, owner, fake_twilio, settings):
    notification = compose_sms(session, owner)
    provider = twilio_provider(settings, fake_twilio)
    assert isinstance(provider, TwilioSmsProvider)
    sent = service.deliver(session, notification.id, email=NoEmail(), sms=provider)
    [request] = fake_twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert request.credentials == (fake_twilio.account_sid, fake_twilio.auth_token)
    assert request.form["To"] == PHONE and request.form["From"] == "DeepRef" and CODE in request.form["Body"]
    [message] = fake_twilio.messages
    assert sent.provider_message_id == message.sid and message.sid.startswith("SM")
    assert sent.status == NotificationStatus.SENT


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (500, TransientDeliveryError, "sms api answered 500"),
        (503, TransientDeliveryError, "sms api answered 503"),
        (429, TransientDeliveryError, "sms api answered 429"),
        (401, TransientDeliveryError, "sms api answered 401"),
        (400, PermanentDeliveryError, r"sms api refused \(400, code 21211\)"),
        (404, PermanentDeliveryError, r"sms api refused \(404, code 21211\)"),
    ],
)
def test_twilio_errors(session, owner, fake_twilio, settings, status, error, message):
    fake_twilio.fail_next(status)
    notification = compose_sms(session, owner)
    with pytest.raises(error, match=message):
        service.deliver(session, notification.id, email=NoEmail(), sms=twilio_provider(settings, fake_twilio))
    assert PHONE not in notification.last_error and fake_twilio.messages == []


def test_twilio_retry_after_a_transient_error_sends_once(session, owner, fake_twilio, settings):
    fake_twilio.fail_next(500)
    notification = compose_sms(session, owner)
    provider = twilio_provider(settings, fake_twilio)
    with pytest.raises(TransientDeliveryError):
        service.deliver(session, notification.id, email=NoEmail(), sms=provider)
    for _ in range(2):
        sent = service.deliver(session, notification.id, email=NoEmail(), sms=provider)
    assert sent.attempts == 2 and sent.last_error is None and len(fake_twilio.wait_for(1)) == 1


def test_twilio_checks_credentials(fake_twilio):
    provider = TwilioSmsProvider(fake_twilio.url, fake_twilio.account_sid, "wrong-token", "DeepRef")
    with pytest.raises(TransientDeliveryError, match="401"):
        provider.send(PHONE, "hello")
    assert fake_twilio.requests[0].status == 401


def test_twilio_unreachable_is_transient():
    provider = TwilioSmsProvider(f"http://127.0.0.1:{free_port()}", "AC1", "token", "DeepRef", timeout=(1, 1))
    with pytest.raises(TransientDeliveryError, match=r"sms api unavailable \(ConnectionError\)"):
        provider.send(PHONE, "hello")


def test_twilio_odd_answers(fake_twilio):
    provider = TwilioSmsProvider(fake_twilio.url, fake_twilio.account_sid, fake_twilio.auth_token, "DeepRef")
    fake_twilio.respond_next(201, b"accepted, but not JSON")
    assert provider.send(PHONE, "hello") == "unknown"  # accepted: not an error, not retried
    fake_twilio.respond_next(400, b"<html>Bad Request</html>")
    with pytest.raises(PermanentDeliveryError, match=r"\(400, code none\)"):
        provider.send(PHONE, "hello")
    fake_twilio.respond_next(400, {"code": "+14155550123 is not a code", "message": "x"})
    with pytest.raises(PermanentDeliveryError, match=r"\(400, code none\)"):
        provider.send(PHONE, "hello")


def test_twilio_fake_validates_the_form(fake_twilio):
    auth = (fake_twilio.account_sid, fake_twilio.auth_token)
    endpoint = fake_twilio.url + fake_twilio.messages_path
    assert requests.post(endpoint, data={"From": "X", "Body": "b"}, auth=auth, timeout=5).json()["code"] == 21604
    assert requests.post(endpoint, data={"To": PHONE, "Body": "b"}, auth=auth, timeout=5).json()["code"] == 21603
    answer = requests.post(
        endpoint, data={"To": PHONE, "MessagingServiceSid": "MG1", "Body": "b"}, auth=auth, timeout=5
    )
    assert answer.status_code == 201 and answer.json()["from"] == "MG1"
    assert requests.post(endpoint, data={"To": PHONE}, timeout=5).status_code == 401
    assert requests.post(endpoint, json={"To": PHONE}, auth=auth, timeout=5).status_code == 400


# --- erasure and logs ---------------------------------------------------------------------


def test_a_message_of_an_erased_owner_fails_for_good(session, owner):
    notification = compose_email(session, owner)
    owner.wrapped_data_key = None  # crypto-shredding
    owner.__dict__.pop("_data_key", None)
    with pytest.raises(PermanentDeliveryError, match="unreadable"):
        service.deliver(session, notification.id, email=NoEmail(), sms=NoSms())
    assert notification.status == NotificationStatus.FAILED


def test_logs_carry_no_recipient_and_no_body(session, owner, smtp_sink, fake_twilio, settings, caplog):
    caplog.set_level(logging.INFO, logger="domain.notifications")
    email = SmtpEmailProvider(smtp_sink.url, settings.email_from)
    sms = twilio_provider(settings, fake_twilio)
    service.deliver(session, compose_email(session, owner).id, email=email, sms=sms)
    service.deliver(session, compose_sms(session, owner).id, email=email, sms=sms)
    fake_twilio.fail_next(400)
    with pytest.raises(PermanentDeliveryError):
        service.deliver(session, compose_sms(session, owner).id, email=email, sms=sms)
    logged = [JsonFormatter().format(r) for r in caplog.records if r.name.startswith("domain.notifications")]
    assert [json.loads(line)["message"] for line in logged] == [
        "notification composed",
        "notification sent",
        "notification composed",
        "notification sent",
        "notification composed",
        "notification not sent",
    ]
    everything = "\n".join(logged)
    for secret in ("ann.referee", "example.com", "14155550123", CODE):
        assert secret not in everything
