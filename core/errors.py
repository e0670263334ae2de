"""Typed errors of the care-domain operations, one class per kind of refusal.

Every entry point turns them into its own kind of message: the web pages into 404/409/422/503
pages naming the field, the CLI into one line and a non-zero exit, the API into problem details.
Messages are plain English sentences for a person; ``field`` names the input at fault, or is None.
"""

from __future__ import annotations


class DomainError(Exception):
    """An operation that was refused; ``field`` names the input at fault (None: the request as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """The input does not fit: a missing, malformed or unknown value."""


class NotFound(DomainError):
    """No such record, or one the person asking may not see (the two are never told apart)."""


class NotAllowed(DomainError):
    """The person may see the record but not change it (a supervisor reads a client's record, and only reads)."""


class Conflict(DomainError):
    """The record's state does not allow the operation (an answered link cannot be re-issued, ...)."""


class DatabaseUnavailable(DomainError):
    """The database could not be reached for a few seconds; nothing was stored, the caller may send again."""


class RateLimited(DomainError):
    """Too many requests in the current window; ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field)
        self.retry_after = retry_after
