"""Accounts: argon2 password hashes, signing in, server-side sessions and the one-time setup token.

No Flask here: the web pages, the ``rapportal`` commands and the API all use these functions.
A sign-in session is a row in ``user_sessions``; the cookie holds a random id whose SHA-256 is
stored, so a copy of the database cannot be used to sign in. Failed sign-ins slow the next try
with an exponential backoff per account and address (see :func:`sign_in`), never a hard lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.audit import record
from core.models import User, UserSession
from core.throttle import Backoff, backoff_wait, clear_keys, forget_quiet, lock_keys, record_failure
from core.tokens import hash_token, new_token

ROLES = ("admin", "clinician", "supervisor", "auditor")
ROLE_TITLES = {"admin": "Administrator", "clinician": "Clinician", "auditor": "Auditor (read-only)"}
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_DISPLAY_NAME_LENGTH = 128
LAST_ADMIN = "This is the last active administrator: add another one first."
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


def user_by_username(session: so.Session, username: str) -> User:
    """The account called ``username`` (any case); :class:`AccountError` when there is none."""
    user = session.scalar(sa.select(User).where(User.username == normalise_username(username)))
    if user is None:
        raise AccountError("username", "There is no such account.")
    return user


def _active_admin_ids(session: so.Session) -> list[int]:
    # FOR UPDATE: two administrators demoting each other at once cannot both see the other one
    # still there (PostgreSQL; SQLite transactions hold the write lock already).
    query = sa.select(User.id).where(User.role == "admin", User.active.is_(True)).with_for_update()
    return list(session.scalars(query))


def update_user(
    session: so.Session,
    user: User,
    *,
    display_name: str,
    role: str,
    active: bool,
    password: str | None = None,
    actor: str,
    address: str | None,
) -> list[str]:
    """Change an account's name, role, active state and (when given) password; return the fields changed.

    Refuses to leave no active administrator. A new role or a deactivation ends the person's
    sessions, as a new password does. Audited as ``user.update`` naming the fields, never the password.
    Raises :class:`AccountError` naming the field; nothing is changed then.
    """
    name = (display_name or "").strip()
    if not name:
        raise AccountError("display_name", "Enter a name.")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise AccountError("display_name", f"Use at most {MAX_DISPLAY_NAME_LENGTH} characters.")
    if role not in ROLES:
        raise AccountError("role", f"Choose one of: {', '.join(ROLES)}.")
    if password:
        problem = password_problem(password)
        if problem:
            raise AccountError("password", problem)
    losing_admin = user.role == "admin" and user.active and (role != "admin" or not active)
    if losing_admin and len(_active_admin_ids(session)) <= 1:
        raise AccountError("role" if role != "admin" else "active", LAST_ADMIN)
    changed = [
        field
        for field, value in (("display_name", name), ("role", role), ("active", active))
        if getattr(user, field) != value
    ]
    user.display_name, user.role, user.active = name, role, active
    if password:
        set_password(session, user, password)
        changed.append("password")
    if "role" in changed or ("active" in changed and not active):
        end_all_sessions(session, user.id, "account_changed")
    detail: dict[str, Any] = {"changed": changed}
    detail.update({field: getattr(user, field) for field in ("role", "active") if field in changed})
    record(session, actor, "user.update", f"user:{user.id}", address, **detail)
    return changed


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


@dataclass(frozen=True)
class SessionCheck:
    """What :func:`check_session` found: the live session (None when there is none) and what is due to be stored.

    ``end_reason`` is set when the cookie's session must end now (it timed out, its user was deactivated or the
    password changed); ``touch`` when its last-seen time is older than :data:`LAST_SEEN_RESOLUTION`.
    """

    found: UserSession | None
    end_reason: str | None = None
    touch: bool = False
    at: datetime | None = None
    ended: UserSession | None = None  # the session that must end (``end_reason``)


# A sign-in session with its user: every request needs the user, so one statement, not two; made once (a statement
# with a joined load built per request cost more than running it).
_SESSION_WITH_USER = (
    sa.select(UserSession)
    .where(UserSession.token_hash == sa.bindparam("token_hash"))
    .options(so.joinedload(UserSession.user))
)


def check_session(session: so.Session, token: str, policy: SessionPolicy, now: datetime | None = None) -> SessionCheck:
    """Like :func:`load_session`, but changes nothing: a reading request checks its sign-in session this way and
    stores what is due (:func:`store_session_check`) in a short writing transaction of its own."""
    now = now or datetime.now(UTC)
    found = session.scalar(_SESSION_WITH_USER, {"token_hash": hash_token(token)})
    if found is None or found.ended_at is not None:
        return SessionCheck(None)
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
        return SessionCheck(None, end_reason=reason, at=now, ended=found)
    # The last-seen time is written at most every LAST_SEEN_RESOLUTION (30 s), sparing a write on nearly every
    # request: the idle time-out then counts from up to 30 s before the latest request, so a session idle for
    # SESSION_IDLE_MINUTES ends at the latest on time and at the earliest 30 s early, never late.
    return SessionCheck(found, touch=now - _aware(found.last_seen_at) > LAST_SEEN_RESOLUTION, at=now)


def store_session_check(session: so.Session, session_id: int, check: SessionCheck) -> None:
    """Store what :func:`check_session` found due for the session ``session_id``: its end or its last-seen time.

    Either is stored only while the session has not ended otherwise (signed out meanwhile, say): the first end
    and its reason stay.
    """
    table = UserSession.__table__  # Core statements: the ORM object belongs to the reading session
    if check.end_reason:
        session.execute(
            sa.update(table)
            .where(table.c.id == session_id, table.c.ended_at.is_(None))
            .values(ended_at=check.at, end_reason=check.end_reason)
        )
    elif check.touch:
        session.execute(
            sa.update(table).where(table.c.id == session_id, table.c.ended_at.is_(None)).values(last_seen_at=check.at)
        )


def load_session(
    session: so.Session, token: str, policy: SessionPolicy, now: datetime | None = None
) -> UserSession | None:
    """The live session for a cookie token, or None; ends a session that timed out.

    A session ends after ``policy.idle`` without a request, after ``policy.absolute`` in all,
    when its user is deactivated and when the password changed after it began.
    """
    check = check_session(session, token, policy, now)
    if check.end_reason:
        assert check.ended is not None
        check.ended.ended_at = check.at
        check.ended.end_reason = check.end_reason
        return None
    if check.touch and check.found is not None:  # see check_session: spare a write on every request
        check.found.last_seen_at = check.at
    return check.found


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


def change_password(session: so.Session, user: User, current: str, new: str, *, actor: str, address: str | None) -> str:
    """A user changes their own password: every session ends and this one gets a new token (returned).

    Raises :class:`AccountError` on ``current`` when it is wrong, on ``password`` when the new one is refused.
    """
    if not verify_password(session, user, current):
        raise AccountError("current", "This is not your current password.")
    set_password(session, user, new)
    record(session, actor, "password.change", f"user:{user.id}", address)
    return start_session(session, user, address)


def sign_out(session: so.Session, user_session: UserSession, *, actor: str, address: str | None) -> None:
    """End a sign-in session at the user's request; audited."""
    end_session(user_session, "logout")
    record(session, actor, "logout", f"user:{user_session.user_id}", address)


def set_up_first_admin(
    session: so.Session, username: str, display_name: str, password: str, *, address: str | None
) -> SignIn | None:
    """Create the first administrator and sign them in; None when an account exists already (setup is over).

    Two setups at the same moment cannot both succeed (:func:`claim_first_setup`).
    """
    if not claim_first_setup(session):
        return None
    user = create_user(session, username, display_name, "admin", password, actor="setup", address=address)
    token = start_session(session, user, address)
    record(session, f"user:{user.username}", "setup.first_admin", f"user:{user.id}", address)
    return SignIn(user, token)


# -- signing in -------------------------------------------------------------------

SIGN_IN_KEYS = "signin-"


@dataclass(frozen=True)
class SignInLimits:
    """How failed sign-ins slow the next try: per account and address, per account, per address."""

    pair: Backoff
    account: Backoff
    address: Backoff

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SignInLimits:
        """The limits from the ``LOGIN_*`` settings (see docs/settings.md)."""
        forget = int(settings["LOGIN_FORGET_SECONDS"])

        def rule(level: str) -> Backoff:
            return Backoff(
                int(settings[f"LOGIN{level}_FREE_FAILURES"]), int(settings[f"LOGIN{level}_MAX_WAIT_SECONDS"]), forget
            )

        return cls(pair=rule(""), account=rule("_ACCOUNT"), address=rule("_ADDRESS"))


@dataclass(frozen=True)
class SignIn:
    """A sign-in that happened: the person and the token for their cookie (only its hash is stored)."""

    user: User
    token: str


class SignInRefused(Exception):
    """A sign-in that did not happen.

    ``reason`` is ``"credentials"`` (unknown name, wrong password or inactive account: never told
    apart) or ``"throttled"`` (too many failures: try again in ``retry_after`` seconds).
    """

    def __init__(self, reason: str, retry_after: int = 0) -> None:
        super().__init__(f"sign-in refused: {reason}" + (f", retry after {retry_after} s" if retry_after else ""))
        self.reason = reason
        self.retry_after = retry_after


def throttle_address(address: str | None) -> str:
    """What the sign-in throttle counts an address as: an IPv6 client by its /64, which one host may own whole."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _pair_prefix(username: str) -> str:
    # the typed name is hashed: it may be a password typed in the wrong field
    return f"{SIGN_IN_KEYS}pair:{hash_token(username)}:"


def _account_key(username: str) -> str:
    return f"{SIGN_IN_KEYS}account:{hash_token(username)}"


def _throttled_password_check(
    session: so.Session,
    name: str,
    password: str,
    address: str | None,
    now: datetime,
    limits: SignInLimits,
    *,
    actor: str,
    action: str,
) -> User:
    """The sign-in throttle and password check, shared by :func:`sign_in` and :func:`confirm_password`.

    Audits ``<action>.throttled`` or ``<action>.failure`` and raises :class:`SignInRefused`; returns the user.
    """
    where = throttle_address(address)
    pair_key = _pair_prefix(name) + where
    counters = (
        (pair_key, limits.pair),
        (_account_key(name), limits.account),
        (f"{SIGN_IN_KEYS}address:{where}", limits.address),
    )
    lock_keys(session, [key for key, _rule in counters])
    user = session.scalar(sa.select(User).where(User.username == name))
    # A name that is no account may be a password typed in the wrong field: keep it out of the audit trail.
    audited_name = name if user is not None else "(no such account)"
    wait = max(backoff_wait(session, key, rule, now) for key, rule in counters)
    if wait > 0:
        retry_after = math.ceil(wait)
        record(session, actor, f"{action}.throttled", None, address, username=audited_name, retry_after=retry_after)
        raise SignInRefused("throttled", retry_after)
    if not verify_password(session, user, password):
        forget_quiet(session, SIGN_IN_KEYS, max(rule.forget for _key, rule in counters), now)
        for key, rule in counters:
            record_failure(session, key, rule, now)
        record(session, actor, f"{action}.failure", None, address, username=audited_name)
        raise SignInRefused("credentials")
    assert user is not None  # verify_password is False for no user
    return user


def confirm_password(
    session: so.Session,
    user: User,
    password: str,
    address: str | None,
    now: datetime | None = None,
    *,
    limits: SignInLimits,
    actor: str,
) -> None:
    """A short re-authentication of a known person (the clinician taking a kiosk back), throttled as sign-in is.

    The same counters as :func:`sign_in` (account and address, account, address) count a wrong password here,
    so a device cannot try more passwords this way than at the sign-in page. Audited ``reauth.failure`` or
    ``reauth.throttled``; raises :class:`SignInRefused`. A success clears the pair's counter and starts no session.
    """
    now = now or datetime.now(UTC)
    _throttled_password_check(session, user.username, password, address, now, limits, actor=actor, action="reauth")
    clear_keys(session, [_pair_prefix(user.username) + throttle_address(address)])


def sign_in(
    session: so.Session,
    username: str,
    password: str,
    address: str | None,
    now: datetime | None = None,
    *,
    limits: SignInLimits,
    replaces: UserSession | None = None,
) -> SignIn:
    """Sign a person in: check the throttle, then the password, then start a session; audited every way.

    Each failure counts for the account-and-address pair, the account and the address; a wait
    any of them still owes refuses the try (``throttled``) without checking the password. A success
    clears the pair. Raises :class:`SignInRefused`; the failure counts and the audit entry are in
    ``session`` then too, so the caller commits after a refusal as after a success. ``replaces``
    is the browser's earlier session, ended here.
    """
    now = now or datetime.now(UTC)
    name = normalise_username(username)[:64]
    user = _throttled_password_check(session, name, password, address, now, limits, actor="anonymous", action="login")
    pair_key = _pair_prefix(name) + throttle_address(address)
    clear_keys(session, [pair_key])
    if replaces is not None:
        end_session(replaces, "replaced")
    token = start_session(session, user, address)
    record(session, f"user:{user.username}", "login.success", f"user:{user.id}", address)
    return SignIn(user, token)


def clear_sign_in_throttle(session: so.Session, user: User, actor: str, address: str | None) -> int:
    """Forget the failed sign-ins of ``user`` (from every address), so they may try again at once; audited.

    Returns how many counters were cleared. An address's own counter stays: it covers other accounts too.
    """
    cleared = clear_keys(session, [_account_key(user.username)], prefix=_pair_prefix(user.username))
    record(session, actor, "user.unlock", f"user:{user.id}", address, counters=cleared)
    return cleared
