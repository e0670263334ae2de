"""API keys: create, list and revoke them, and find the key a request carries.

A key acts as its owner (the same access rules as the owner's pages), narrowed by its scopes:
``read`` for reading, ``write`` for the operations that change a record, ``export`` for exports.
The key is shown once, when it is made; only its SHA-256 is kept (its 256 random bits make a
slow hash unnecessary). Each key has a request budget per minute, counted in the database
(:mod:`core.throttle`), so every process and host shares it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.db import DirectStatement
from core.errors import InvalidInput, NotFound, RateLimited
from core.models import ApiKey, User
from core.scope import site_user_ids
from core.throttle import count_attempt
from core.tokens import hash_token, new_token

SCOPES = ("read", "write", "export")
KEY_PREFIX = "rpk_"
MAX_NAME_LENGTH = 128
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class IssuedKey:
    """A key made just now: ``secret`` is shown once and never stored."""

    key: ApiKey
    secret: str


def parse_scopes(value: str | Iterable[str]) -> tuple[str, ...]:
    """``read,write`` or a list of scope names, checked and in the canonical order."""
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [name for name in names if name]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"Unknown scope {', '.join(unknown)}: use {', '.join(SCOPES)}.", "scopes")
    if not names:
        raise InvalidInput(f"Give at least one scope: {', '.join(SCOPES)}.", "scopes")
    return tuple(scope for scope in SCOPES if scope in names)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def create_api_key(
    session: so.Session,
    *,
    owner: str,
    name: str,
    scopes: str | Iterable[str],
    expires_at: datetime | None = None,
    creator: User | None = None,
    actor: str,
    address: str | None,
) -> IssuedKey:
    """Make a key for the active account ``owner`` (a username); audited as ``api_key.create``.

    A site-limited administrator (``creator``) can make keys only for people at their sites.
    """
    found = session.scalar(sa.select(User).where(User.username == (owner or "").strip()))
    if found is None or not found.active:
        raise InvalidInput("There is no active account with this username.", "owner")
    if creator is not None and found.id not in set(session.scalars(site_user_ids(creator))):
        raise InvalidInput("There is no active account with this username.", "owner")
    name = (name or "").strip() or f"key for {found.username}"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"Use at most {MAX_NAME_LENGTH} characters.", "name")
    checked = parse_scopes(scopes)
    if expires_at is not None and _aware(expires_at) <= datetime.now(UTC):
        raise InvalidInput("Choose an expiry in the future.", "expires")
    secret = KEY_PREFIX + new_token(32)
    key = ApiKey(
        secret_hash=hash_token(secret),
        prefix=secret[: len(KEY_PREFIX) + 6],
        name=name,
        owner_id=found.id,
        scopes=list(checked),
        created_by=actor[:128],
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    record(
        session,
        actor,
        "api_key.create",
        f"user:{found.username}",
        address,
        api_key=key.id,
        scopes=list(checked),
        expires=expires_at.isoformat() if expires_at else None,
    )
    return IssuedKey(key, secret)


def list_api_keys(session: so.Session, *, viewer: User | None = None, actor: str, address: str | None) -> list[ApiKey]:
    """Every key, newest first, with its owner (never a secret); audited as ``api_keys.list``.

    With a ``viewer``, only the keys of people at the viewer's sites.
    """
    query = sa.select(ApiKey).options(so.joinedload(ApiKey.owner)).order_by(ApiKey.id.desc())
    if viewer is not None:
        query = query.where(ApiKey.owner_id.in_(site_user_ids(viewer)))
    keys = list(session.scalars(query))
    record(session, actor, "api_keys.list", None, address, keys=len(keys))
    return keys


def revoke_api_key(
    session: so.Session, key_id: int, *, viewer: User | None = None, actor: str, address: str | None
) -> bool:
    """Revoke a key at once; False when it was revoked already. Audited as ``api_key.revoke``."""
    key = session.get(ApiKey, key_id)
    if key is None or (viewer is not None and key.owner_id not in set(session.scalars(site_user_ids(viewer)))):
        raise NotFound("There is no such API key.", "key")
    if key.revoked_at is not None:
        return False
    key.revoked_at = datetime.now(UTC)
    session.flush()
    record(session, actor, "api_key.revoke", f"user:{key.owner.username}", address, api_key=key.id)
    return True


def key_state(key: Any, now: datetime | None = None) -> str:
    """``active``, ``revoked`` or ``expired``: of an :class:`ApiKey` or a row with its ``revoked_at`` and
    ``expires_at`` (:func:`find_api_key` reads one with a direct statement)."""
    now = now or datetime.now(UTC)
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and _aware(key.expires_at) <= now:
        return "expired"
    return "active"


@dataclass(frozen=True)
class RequestKey:
    """The active key a request carries, as checking it needs it: plain values read with Core.

    The request acts as ``owner_id`` (``owner_username`` in the audit trail), within ``scopes``.
    """

    id: int
    owner_id: int
    owner_username: str
    owner_role: str
    scopes: tuple[str, ...]


_FIND_KEY = DirectStatement(  # the key with its owner in one statement, built and compiled once
    sa.select(
        ApiKey.id,
        ApiKey.owner_id,
        User.username,
        User.role,
        ApiKey.scopes,
        ApiKey.revoked_at,
        ApiKey.expires_at,
        User.active,
    )
    .join(User, User.id == ApiKey.owner_id)
    .where(ApiKey.secret_hash == sa.bindparam("secret_hash"))
)


def find_api_key(db: sa.Engine, secret: str, now: datetime | None = None) -> RequestKey | None:
    """The active key with this secret whose owner may still sign in, or None (unknown, revoked, expired).

    One SELECT and no ORM objects: every API request runs it, without a transaction
    (:class:`core.db.DirectStatement`).
    """
    if not secret.startswith(KEY_PREFIX) or len(secret) > 128:
        return None
    row = _FIND_KEY.first(db, {"secret_hash": hash_token(secret)})
    if row is None or key_state(row, now) != "active" or not row.active:
        return None
    return RequestKey(row.id, row.owner_id, row.username, row.role, tuple(row.scopes))


def spend_request(db: sa.Engine, key_id: int, limit: int, now: float | None = None) -> None:
    """Count one request of key ``key_id``; :class:`RateLimited` past ``limit`` requests in the current minute.

    The count is a row in ``throttle_counters``, written and committed by one statement of its own
    (:func:`core.throttle.count_attempt` given the engine) before this returns or refuses: it counts
    whatever the request then does, and on SQLite the write lock is held for that one statement.
    """
    moment = now if now is not None else time.time()
    used = count_attempt(db, f"api:{key_id}", RATE_WINDOW_SECONDS, moment)
    if used > limit:
        retry = int(RATE_WINDOW_SECONDS - moment % RATE_WINDOW_SECONDS) + 1
        raise RateLimited(f"This key may make {limit} requests a minute.", retry)
