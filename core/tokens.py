"""Secret tokens for links, sign-in sessions and kiosks: random, and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets


def new_token(nbytes: int = 24) -> str:
    """A URL-safe token with ``nbytes`` bytes of randomness (24 bytes: 192 bits)."""
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """What the database keeps of a token: a lookup by hash never stores the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
