"""Verifying JWTs into Identities. Knows nothing about gRPC."""

from __future__ import annotations

import re
from typing import Any

import jwt

from server.errors import Unauthenticated
from server.identity import Identity

TOKEN_MISSING = "TOKEN_MISSING"  # noqa: S105 (a reason code, not a secret)
TOKEN_MALFORMED = "TOKEN_MALFORMED"  # noqa: S105 (a reason code, not a secret)
TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 (a reason code, not a secret)
TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 (a reason code, not a secret)

# A JWS in compact form: three base64url segments. Anything else is refused before PyJWT sees it.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_TOKEN_BYTES = 8192
MAX_USER_ID_LENGTH = 128
# A user id becomes a resource-name segment: no slash, no white space or control characters.
_SAFE_USER_ID = re.compile(r"[^/\s\x00-\x1f\x7f]+")


def user_id_is_safe(user_id: object) -> bool:
    """Whether `user_id` can stand as the `{user_id}` segment of a resource name."""
    return (
        isinstance(user_id, str)
        and 0 < len(user_id) <= MAX_USER_ID_LENGTH
        and _SAFE_USER_ID.fullmatch(user_id) is not None
    )


class TokenVerifier:
    """Checks an HS256 token's signature and claims and returns who it names."""

    def __init__(self, *, hs256_secret: bytes, leeway_seconds: float = 30.0) -> None:
        self._secret = hs256_secret
        self._leeway = leeway_seconds
        self._options: dict[str, Any] = {"require": ["exp", "sub"], "verify_aud": False}

    def verify(self, token: str) -> Identity:
        """The identity `token` proves; raises Unauthenticated with a TOKEN_* reason otherwise."""
        if len(token) > MAX_TOKEN_BYTES or _COMPACT_JWS.fullmatch(token) is None:
            raise Unauthenticated("the bearer token is not a JWT", reason=TOKEN_MALFORMED)
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options=self._options, leeway=self._leeway
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one", reason=TOKEN_EXPIRED) from None
        except jwt.InvalidSignatureError:  # a subclass of DecodeError: it decoded, but nobody we trust signed it
            raise Unauthenticated("the token's signature does not verify", reason=TOKEN_INVALID) from None
        except jwt.DecodeError:
            raise Unauthenticated("the bearer token is not a valid JWT", reason=TOKEN_MALFORMED) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token was refused", reason=TOKEN_INVALID) from None
        return identity_from_claims(claims)


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """The Identity a verified token's claims describe; refuses a `sub` unfit for a resource name."""
    user_id = claims.get("sub")
    if not user_id_is_safe(user_id):
        raise Unauthenticated("the token's sub claim is not a usable user id", reason=TOKEN_INVALID)
    email, name = claims.get("email"), claims.get("name")
    return Identity(
        user_id=user_id,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
    )
