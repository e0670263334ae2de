"""The notification channel contract: how a plugin delivers a client's link (e-mail, SMS, ...).

A channel is a :class:`NotificationChannel` returned from the ``register_notification_channels``
hook. Rapportal renders the message (only the link and the clinic's name, in the client's
language) and hands it to ``deliver``; the channel talks to its server and raises
:class:`DeliveryError` when the message is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CONTACT_FIELDS = ("email", "phone")


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to one client: everything a channel needs, and nothing clinical.

    ``key`` is stable for the message (outbox row): send it to a provider that deduplicates
    (an ``Idempotency-Key`` header), or use it as the e-mail's Message-ID.
    """

    key: str
    recipient: str
    subject: str
    body: str
    language: str
    clinic: str
    link: str


class DeliveryError(Exception):
    """The channel could not deliver the message; the text (the server's reply) is shown to clinicians.

    ``permanent`` refusals (an unknown mailbox, a rejected number) are not retried; temporary ones
    (a server that is down, a full queue) are retried with backoff, then reported.
    """

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class NotificationChannel:
    """A way to send a client their link.

    :param name: unique id, stored with every message (``email``, ``sms``).
    :param title: what the send button and the session page call it (English; pages translate the built-ins).
    :param contact: the client field it sends to: ``email`` or ``phone``.
    :param deliver: ``deliver(message, settings, point_of_no_return)`` sends one message. It must call
        ``point_of_no_return()`` right before the step that cannot be taken back (the final dot of the SMTP
        DATA, the HTTP request): Rapportal then records the message as sent, so a worker that dies later never
        sends it again. If that call raises, the channel must stop without sending.
    :param configured: ``configured(settings)`` tells whether the settings it needs are there; an
        unconfigured channel is not offered.
    """

    name: str
    title: str
    contact: str
    deliver: Callable[[OutgoingMessage, Mapping[str, Any], Callable[[], None]], None]
    configured: Callable[[Mapping[str, Any]], bool] = lambda _settings: True

    def __post_init__(self) -> None:
        if self.contact not in CONTACT_FIELDS:
            raise ValueError(f"channel {self.name!r}: contact must be one of {CONTACT_FIELDS}, not {self.contact!r}")
