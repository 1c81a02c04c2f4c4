"""A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives.

    with SmtpSink() as sink:                                  # plain SMTP
        settings = settings.model_copy(update={"smtp_url": sink.url})
        ...
        [mail] = sink.wait_for(1)
        assert "123456" in mail.text

    SmtpSink(starttls=True, auth=("user", "secret"))          # STARTTLS required, then AUTH
    SmtpSink(implicit_tls=True)                               # smtps://

TLS uses a throw-away CA generated at start; clients trust it through
`sink.client_ssl_context()` or by setting `SSL_CERT_FILE=sink.ca_file` (see `environment()`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None  # the AUTH user name, when the client logged in
    tls: bool  # whether the session was encrypted (STARTTLS or implicit TLS)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str | None:
        return self._part("plain")

    @property
    def html(self) -> str | None:
        return self._part("html")

    def _part(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        return str(part.get_content())


class _Controller(Controller):
    """aiosmtpd's controller, listening on a port the OS picks (port=0)."""

    # AUTH without STARTTLS: over implicit TLS (already encrypted) or a plain test sink.
    auth_without_starttls = False

    def factory(self) -> SMTP:
        server = super().factory()
        if self.auth_without_starttls:
            # Set after construction: aiosmtpd warns on every connection when it is passed in.
            server._auth_require_tls = False
        return server

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """Collects every message sent to it in `messages`; see the module docstring."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.messages: list[ReceivedMail] = []
        self.failed_logins = 0
        # Set to e.g. "550 5.1.1 No such user" to refuse every recipient with that reply,
        # or "554 5.6.0 Message rejected" to refuse the message after DATA.
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None
        # Seconds to think before accepting a recipient: keeps a sending worker busy mid-conversation.
        self.rcpt_delay = 0.0
        self.port = 0
        self._changed = threading.Condition()
        self._controller: _Controller | None = None
        self._cert_dir: Path | None = None

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the server's certificate (TLS sinks only)."""
        if self._cert_dir is None:
            raise RuntimeError("this sink does not use TLS")
        return self._cert_dir / "ca.pem"

    @property
    def url(self) -> str:
        """The SMTP_URL that reaches this sink, with its credentials and TLS mode."""
        scheme = "smtps" if self.implicit_tls else "smtp+starttls" if self.starttls else "smtp"
        credentials = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@" if self.auth else ""
        return f"{scheme}://{credentials}{HOST}:{self.port}"

    def environment(self) -> dict[str, str]:
        """Environment variables that point a process (e.g. a worker) at this sink."""
        env = {"SMTP_URL": self.url}
        if self._cert_dir is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this sink's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; return them all (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")
                self._changed.wait(remaining)
            return list(self.messages)

    def start(self) -> SmtpSink:
        tls_context = None
        if self.starttls or self.implicit_tls:
            self._cert_dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
            tls_context = _server_context(self._cert_dir)
        options: dict[str, Any] = {"server_hostname": "localhost"}
        if self.starttls:
            options.update(tls_context=tls_context, require_starttls=True)
        if self.implicit_tls:
            options["ssl_context"] = tls_context
        if self.auth:
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
        self._controller = _Controller(_Handler(self), hostname=HOST, port=0, **options)
        self._controller.auth_without_starttls = bool(self.auth) and not self.starttls
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and self.auth is not None:
            login, password = data.login.decode(), data.password.decode()
            if (login, password) == self.auth:
                return AuthResult(success=True, auth_data=login)
        self.failed_logins += 1
        return AuthResult(success=False, handled=False)

    def _received(self, mail: ReceivedMail) -> None:
        with self._changed:
            self.messages.append(mail)
            self._changed.notify_all()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.sink.rcpt_delay:
            await asyncio.sleep(self.sink.rcpt_delay)
        if self.sink.rcpt_reply:
            return self.sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.data_reply:
            return self.sink.data_reply
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.sink._received(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                login=session.auth_data if session.authenticated else None,
                tls=server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 Message accepted for delivery"


def _server_context(directory: Path) -> ssl.SSLContext:
    """Make a CA and a certificate for localhost/127.0.0.1 signed by it; return the server context."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DeepRef test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))])
    cert = (
        _builder(name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
