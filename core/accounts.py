"""Accounts: argon2 password hashes, server-side sign-in sessions and the one-time setup token.

No Flask here: the web layer and the ``rapportal create-user`` command both use these functions.
A sign-in session is a row in ``user_sessions``; the cookie holds a random id whose SHA-256 is
stored, so a copy of the database cannot be used to sign in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.audit import record
from core.models import User, UserSession
from core.tokens import hash_token, new_token

ROLES = ("admin", "clinician", "auditor")
ROLE_TITLES = {"admin": "Administrator", "clinician": "Clinician", "auditor": "Auditor (read-only)"}
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
LAST_SEEN_RESOLUTION = timedelta(seconds=30)

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_dummy_hash: str | None = None


class AccountError(ValueError):
    """Input that cannot become an account: ``field`` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Use at most {MAX_PASSWORD_LENGTH} characters."
    if not password.strip():
        return "The password cannot be only spaces."
    return None


def verify_password(session: so.Session, user: User | None, password: str) -> bool:
    """Check a password; an unknown or inactive user costs the same argon2 work as a known one."""
    global _dummy_hash
    if user is None or not user.active or not user.password_hash:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_hex(16))
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash, password)
        return False
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


def normalise_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str:
    name = normalise_username(username)
    if not 2 <= len(name) <= 64:
        raise AccountError("username", "Use 2 to 64 characters.")
    if not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError("username", "Use letters, digits and . _ - @ only.")
    return name


def create_user(
    session: so.Session, username: str, display_name: str, role: str, password: str, *, actor: str, address: str | None
) -> User:
    """Add a user (flushes, does not commit). Raises :class:`AccountError` naming the field."""
    name = check_username(username)
    if role not in ROLES:
        raise AccountError("role", f"Choose one of: {', '.join(ROLES)}.")
    problem = password_problem(password)
    if problem:
        raise AccountError("password", problem)
    if session.scalar(sa.select(User.id).where(User.username == name)) is not None:
        raise AccountError("username", "This username is taken.")
    user = User(
        username=name,
        display_name=(display_name or name).strip()[:128],
        role=role,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    record(session, actor, "user.create", f"user:{user.id}", address, role=role)
    return user


def any_user_exists(session: so.Session) -> bool:
    return session.scalar(sa.select(User.id).limit(1)) is not None


def claim_first_setup(session: so.Session) -> bool:
    """Serialise first-administrator setups and say whether this one may go ahead (no account yet).

    SQLite transactions already hold the write lock (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock, so two simultaneous setups cannot both create an admin.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('rapportal-first-admin-setup'))"))
    return not any_user_exists(session)


def setup_token(secret_key: str) -> str:
    """The first-administrator setup token: valid only while no account exists.

    Derived from the secret key, so every process and ``rapportal setup-link`` agree on it
    without storing it; it stops working for good once the first account is created.
    """
    return hmac.new(secret_key.encode(), b"rapportal-first-admin-setup", hashlib.sha256).hexdigest()[:32]


def check_setup_token(secret_key: str, token: str) -> bool:
    # bytes: compare_digest refuses non-ASCII str, and a typed-in token may be anything
    return hmac.compare_digest(setup_token(secret_key).encode(), token.encode("utf-8", "surrogatepass"))


# -- sign-in sessions -----------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def start_session(session: so.Session, user: User, address: str | None) -> str:
    """Create a sign-in session; return the token for the cookie (never stored)."""
    token = new_token(32)
    now = datetime.now(UTC)
    session.add(
        UserSession(token_hash=hash_token(token), user_id=user.id, created_at=now, last_seen_at=now, address=address)
    )
    session.flush()
    return token


def load_session(
    session: so.Session, token: str, policy: SessionPolicy, now: datetime | None = None
) -> UserSession | None:
    """The live session for a cookie token, or None; ends a session that timed out.

    A session ends after ``policy.idle`` without a request, after ``policy.absolute`` in all,
    when its user is deactivated and when the password changed after it began.
    """
    now = now or datetime.now(UTC)
    found = session.scalar(sa.select(UserSession).where(UserSession.token_hash == hash_token(token)))
    if found is None or found.ended_at is not None:
        return None
    user = found.user
    reason = None
    if not user.active:
        reason = "deactivated"
    elif now - _aware(found.created_at) > policy.absolute:
        reason = "absolute_timeout"
    elif now - _aware(found.last_seen_at) > policy.idle:
        reason = "idle_timeout"
    elif _aware(user.password_changed_at) > _aware(found.created_at):
        reason = "password_changed"
    if reason:
        found.ended_at = now
        found.end_reason = reason
        return None
    if now - _aware(found.last_seen_at) > LAST_SEEN_RESOLUTION:  # spare a write on every request
        found.last_seen_at = now
    return found


def end_session(user_session: UserSession, reason: str) -> None:
    if user_session.ended_at is None:
        user_session.ended_at = datetime.now(UTC)
        user_session.end_reason = reason


def end_all_sessions(session: so.Session, user_id: int, reason: str) -> None:
    session.execute(
        sa.update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .values(ended_at=datetime.now(UTC), end_reason=reason)
    )


def set_password(session: so.Session, user: User, password: str) -> None:
    """Change a password and end every session of the user (raises :class:`AccountError`)."""
    problem = password_problem(password)
    if problem:
        raise AccountError("password", problem)
    user.password_hash = hash_password(password)
    # Sessions that began before this instant end on their next request (see load_session);
    # ending them here too makes the change visible at once.
    user.password_changed_at = datetime.now(UTC)
    end_all_sessions(session, user.id, "password_changed")
