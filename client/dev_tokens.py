"""Minting development tokens: HS256 JWTs shaped like Better Auth's, signed with BETTER_AUTH_SECRET."""

from __future__ import annotations

import time

import jwt


def mint_hs256_token(
    *, secret: bytes, subject: str, ttl_seconds: int = 3600, email: str | None = None, name: str | None = None
) -> str:
    """A token for `subject`, valid from now for `ttl_seconds`."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")
