"""E-mail through an SMTP server: STARTTLS, authentication and the configured sender.

Settings (docs/settings.md): ``SMTP_HOST`` (no host: the channel is not offered), ``SMTP_PORT`` (587),
``SMTP_STARTTLS`` (true), ``SMTP_USERNAME`` / ``SMTP_PASSWORD`` (log in when a username is set),
``SMTP_SENDER`` (the From address), ``SMTP_TIMEOUT_SECONDS`` (30) and ``SMTP_CA_FILE`` (a CA bundle to
trust instead of the system's, for a server with the clinic's own certificate).

The message is marked as sent (``point_of_no_return``) after the server accepted sender, recipient and
text, just before the final dot that makes it deliver: a worker killed before that dot sends nothing
(the server drops an unfinished message), one killed after it has the message on record as sent.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from core import DeliveryError, NotificationChannel, OutgoingMessage, hookimpl


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def _configured(settings: Mapping[str, Any]) -> bool:
    return bool(settings.get("SMTP_HOST")) and bool(settings.get("SMTP_SENDER"))


def _email(message: OutgoingMessage, sender: str) -> bytes:
    email = EmailMessage(policy=policy.SMTP)
    email["From"] = sender
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "rapportal.invalid"
    email["Message-ID"] = f"<{message.key}@{domain}>"
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to the portal
    email.set_content(message.body, charset="utf-8")
    email["Content-Language"] = message.language  # after set_content, which replaces the Content-* headers
    return email.as_bytes()


def _check(reply: tuple[int, bytes], step: str) -> None:
    code, text = reply
    if not 200 <= code < 400:
        raise DeliveryError(f"{step}: {code} {text.decode('utf-8', 'replace')}", permanent=code >= 500)


def _deliver(message: OutgoingMessage, settings: Mapping[str, Any], point_of_no_return: Callable[[], None]) -> None:
    host = str(settings["SMTP_HOST"])
    port = int(settings.get("SMTP_PORT") or 587)
    sender = str(settings["SMTP_SENDER"])
    timeout = float(settings.get("SMTP_TIMEOUT_SECONDS") or 30)
    data = _email(message, sender)
    try:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    except OSError as exc:
        raise DeliveryError(f"cannot reach the SMTP server {host}:{port}: {exc}", permanent=False) from exc
    try:
        smtp.ehlo()
        if _flag(settings.get("SMTP_STARTTLS"), True):
            context = ssl.create_default_context(cafile=settings.get("SMTP_CA_FILE") or None)
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.get("SMTP_USERNAME"):
            smtp.login(str(settings["SMTP_USERNAME"]), str(settings.get("SMTP_PASSWORD") or ""))
        _check(smtp.mail(parseaddr(sender)[1] or sender), "sender refused")
        _check(smtp.rcpt(message.recipient), "recipient refused")
        _check(smtp.docmd("DATA"), "message refused")
        # dot-stuffing (RFC 5321 4.5.2), then the text without its final dot
        smtp.send(re.sub(rb"(?m)^\.", b"..", data))
        point_of_no_return()  # raises if this worker lost its claim: then nothing is delivered
        smtp.send(b".\r\n")
        _check(smtp.getreply(), "message refused")
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"the SMTP server refused the login: {exc.smtp_code}", permanent=False) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"the SMTP server does not offer {exc}", permanent=False) from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        raise DeliveryError(f"{exc.smtp_code} {text}", permanent=exc.smtp_code >= 500) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP failed: {exc}", permanent=False) from exc
    finally:
        smtp.close()  # never QUIT in the middle of DATA: closing drops an unfinished message


@hookimpl
def register_notification_channels() -> list[NotificationChannel]:
    return [
        NotificationChannel(name="email", title="E-mail", contact="email", deliver=_deliver, configured=_configured)
    ]
