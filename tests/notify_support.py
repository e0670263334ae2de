"""A real SMTP server for the notification tests (aiosmtpd in a thread), optionally with STARTTLS and AUTH."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USERNAME, SMTP_PASSWORD = "portal", "smtp secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Received:
    """One message as the server accepted it: envelope recipients, the parsed message, whether the sender logged in."""

    recipients: list[str]
    message: EmailMessage
    authenticated: bool


@dataclass
class MailHandler:
    """Keeps every accepted message; ``refuse`` maps a recipient to the SMTP reply that rejects it."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(list(envelope.rcpt_tos), parsed, bool(session.authenticated)))
        return "250 Message accepted"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def start_smtp(handler: MailHandler, *, tls_folder: Path | None = None) -> Controller:
    """Start the server on a free port; with ``tls_folder`` it requires STARTTLS and AUTH LOGIN/PLAIN."""
    options: dict[str, Any] = {}
    if tls_folder is not None:
        cert, key = self_signed_certificate(tls_folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": _authenticator,
            "auth_required": True,
        }
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    return controller
