"""An example SMS channel: POSTs each message as JSON to a configurable HTTP endpoint.

This is the template for a real SMS provider (docs/notifications.md shows how to adapt it). Settings:
``SMS_HTTP_URL`` (no URL: the channel is not offered), ``SMS_HTTP_TOKEN`` (sent as ``Authorization:
Bearer``), ``SMS_SENDER`` (the sender name or number) and ``SMS_TIMEOUT_SECONDS`` (15).

The request body is ``{"to": "+49...", "from": "...", "text": "...", "reference": "<message key>"}`` with
the same key in an ``Idempotency-Key`` header, so a provider that deduplicates never sends a message
twice. A 2xx answer whose JSON says ``"status": "rejected"`` (or ``"failed"``) is a refusal reported by
the provider (an unknown number, say): its ``error`` is shown on the session page. Any other 4xx is a
permanent refusal, a 5xx or a network error a temporary one (retried).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from core import DeliveryError, NotificationChannel, OutgoingMessage, hookimpl


def _configured(settings: Mapping[str, Any]) -> bool:
    return str(settings.get("SMS_HTTP_URL") or "").startswith(("http://", "https://"))


def _deliver(message: OutgoingMessage, settings: Mapping[str, Any], point_of_no_return: Callable[[], None]) -> None:
    body = {
        "to": message.recipient,
        "from": str(settings.get("SMS_SENDER") or message.clinic),
        "text": message.body,
        "reference": message.key,
    }
    request = urllib.request.Request(
        str(settings["SMS_HTTP_URL"]),
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": message.key},
    )
    if settings.get("SMS_HTTP_TOKEN"):
        request.add_header("Authorization", f"Bearer {settings['SMS_HTTP_TOKEN']}")
    point_of_no_return()
    try:
        with urllib.request.urlopen(request, timeout=float(settings.get("SMS_TIMEOUT_SECONDS") or 15)) as answer:
            raw = answer.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the SMS endpoint answered {exc.code} {exc.reason}", permanent=exc.code < 500) from exc
    except OSError as exc:
        raise DeliveryError(f"cannot reach the SMS endpoint: {exc}", permanent=False) from exc
    try:
        reply = json.loads(raw or b"{}")
    except ValueError:
        reply = {}
    if isinstance(reply, dict) and reply.get("status") in ("rejected", "failed"):
        raise DeliveryError(f"the SMS provider refused the message: {reply.get('error') or 'no reason given'!s}")


@hookimpl
def register_notification_channels() -> list[NotificationChannel]:
    return [NotificationChannel(name="sms", title="SMS", contact="phone", deliver=_deliver, configured=_configured)]
