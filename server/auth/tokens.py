"""Verifying JWTs into Identities. Knows nothing about gRPC."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import jwt

from server.auth.jwks import (
    ALGORITHMS_BY_KEY_TYPE,
    PUBLIC_KEY_ALGORITHMS,
    JwksCache,
    PublishedKey,
    SigningKeysLoading,
)
from server.auth.verified_cache import VerifiedTokenCache
from server.errors import Unauthenticated, Unavailable
from server.identity import Identity

TOKEN_MISSING = "TOKEN_MISSING"  # noqa: S105 (a reason code, not a secret)
TOKEN_MALFORMED = "TOKEN_MALFORMED"  # noqa: S105 (a reason code, not a secret)
TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 (a reason code, not a secret)
TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 (a reason code, not a secret)
TOKEN_REASONS = (TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_EXPIRED, TOKEN_INVALID)
# UNAVAILABLE, not UNAUTHENTICATED: the token may be good, and a BFF signs its user out on UNAUTHENTICATED.
SIGNING_KEYS_LOADING = "SIGNING_KEYS_LOADING"

HMAC_ALGORITHMS = frozenset({"HS256"})
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS

# A JWS in compact form: three base64url segments. Anything else is refused before PyJWT sees it.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TIME_CLAIMS = ("exp", "nbf", "iat")
_LATEST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_TOKEN_BYTES = 8192
MAX_USER_ID_LENGTH = 128


def user_id_is_safe(user_id: object) -> bool:
    """Whether `user_id` can stand as the `{user_id}` segment of a resource name, and in a log line as it is.

    Printable only (str.isprintable): no control characters (C0, C1), no format characters (a right-to-left
    override or a zero-width space makes one id look like another), no private-use or unassigned code
    points, no white space but the ASCII space, which is refused with the slash.
    """
    return (
        isinstance(user_id, str)
        and 0 < len(user_id) <= MAX_USER_ID_LENGTH
        and user_id.isprintable()
        and " " not in user_id
        and "/" not in user_id
    )


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason=TOKEN_INVALID)


class TokenVerifier:
    """Checks a token's signature and claims and returns who it names.

    Two key sources, either or both: an HS256 secret and a JWKS. Each token's `alg` picks exactly one,
    and only from `algorithms`: an HS token is never checked against a JWKS key nor an EdDSA/ES/RS token
    against the secret, and `none` is never accepted. With no audience configured, a token that carries
    `aud` is refused (RFC 7519 4.1.3: it names someone, and we cannot tell it is us).
    """

    def __init__(
        self,
        *,
        hs256_secret: bytes | None = None,
        jwks: JwksCache | None = None,
        issuer: str | None = None,
        audience: Collection[str] = (),
        algorithms: Collection[str] | None = None,
        leeway_seconds: float = 30.0,
        cache: VerifiedTokenCache | None = None,
    ) -> None:
        if hs256_secret is None and jwks is None:
            raise ValueError("a TokenVerifier needs an HS256 secret, a JWKS, or both")
        available = (HMAC_ALGORITHMS if hs256_secret is not None else frozenset()) | (
            PUBLIC_KEY_ALGORITHMS if jwks is not None else frozenset()
        )
        self.algorithms = available if algorithms is None else frozenset(algorithms) & available
        if not self.algorithms:
            raise ValueError(f"none of the allowed algorithms {sorted(algorithms or ())} fits the configured keys")
        self._secret = hs256_secret
        self.jwks = jwks
        self._issuer = issuer
        self._audience = list(audience) or None
        self._leeway = leeway_seconds
        self._cache = cache
        require = ["exp", "sub"] + (["iss"] if issuer else []) + (["aud"] if self._audience else [])
        self._options: dict[str, Any] = {"require": require}

    @property
    def cache(self) -> VerifiedTokenCache | None:
        """The verified-token cache, if any (for tests and operators' tools)."""
        return self._cache

    def verify(self, token: str) -> Identity:
        """The identity `token` proves; raises Unauthenticated with a TOKEN_* reason otherwise, or Unavailable
        (SIGNING_KEYS_LOADING) while the issuer's keys are being refetched for the key it names."""
        if len(token) > MAX_TOKEN_BYTES or _COMPACT_JWS.fullmatch(token) is None:
            raise Unauthenticated("the bearer token is not a JWT", reason=TOKEN_MALFORMED)
        if self._cache is not None:
            cached = self._cache.get(token, key_published=self._key_still_published)
            if cached is not None:
                return cached
        alg, key, published = self._key_for(token)
        claims = self._decode(token, key, alg)
        identity = identity_from_claims(claims)
        if self._cache is not None:
            self._cache.put(token, identity, expires_at=claims["exp"], key=published)
        return identity

    def _key_still_published(self, published: object) -> bool:
        # A replaced key keeps its kid at some issuers: the very key, not only its kid, must still be there.
        if published is None:  # the HS256 secret, which never changes while the server runs
            return True
        return self.jwks is not None and isinstance(published, PublishedKey) and self.jwks.publishes(published)

    def _key_for(self, token: str) -> tuple[str, Any, PublishedKey | None]:
        """The alg and key that must have signed `token`, chosen by its header, and the JWKS key if any."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("the bearer token is not a valid JWT", reason=TOKEN_MALFORMED) from None
        except jwt.InvalidTokenError:  # a well-formed header PyJWT refuses (a non-string kid, a bad crit)
            raise _invalid("the token's header is not acceptable") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid(f"tokens signed with {str(alg)[:16]!r} are not accepted")
        if "crit" in header:  # we implement no JWS extensions, so none may be critical (RFC 7515 4.1.11)
            raise _invalid("the token names critical header extensions this server does not support")
        if alg in HMAC_ALGORITHMS:
            return alg, self._secret, None
        assert self.jwks is not None  # an asymmetric alg is only allowed when a JWKS is configured
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("the token has no 'kid' header naming its signing key")
        try:
            jwk = self.jwks.key(kid) if len(kid) <= 256 else None
        except SigningKeysLoading:
            raise Unavailable(
                "the token's signing key is new here and the issuer's keys are being fetched: retry shortly",
                reason=SIGNING_KEYS_LOADING,
            ) from None
        if jwk is None:
            raise _invalid("the token's signing key is not in the issuer's JWKS")
        declared = jwk.declared_alg
        if alg not in ALGORITHMS_BY_KEY_TYPE[jwk.key_type] or (declared is not None and declared != alg):
            raise _invalid(f"the token's alg {alg!r} does not match its key")
        return alg, jwk.key, jwk

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        claims = self._decode_with_pyjwt(token, key, alg)
        for claim in _TIME_CLAIMS:
            # NumericDates are JSON numbers (RFC 7519); PyJWT also takes a string of digits for one.
            value = claims.get(claim)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise _invalid(f"the token's {claim!r} claim is not a number")
            # Past any real date: 10**310 overflowed the verified-token cache, 1e300 never expired there.
            if value is not None and not -_LATEST_NUMERIC_DATE <= value <= _LATEST_NUMERIC_DATE:
                raise _invalid(f"the token's {claim!r} claim is not a date before the year 10000")
        # PyJWT lets an empty `aud` ("" or []) through when no audience is configured; any `aud` names a
        # recipient, and we cannot tell that it is us.
        if self._audience is None and "aud" in claims:
            raise _invalid("the token names an audience (aud) and none is configured: set JWT_AUDIENCE")
        return claims

    def _decode_with_pyjwt(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                options=self._options,
                leeway=self._leeway,
                issuer=self._issuer,
                audience=self._audience,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one", reason=TOKEN_EXPIRED) from None
        except jwt.InvalidSignatureError:  # a subclass of DecodeError: it decoded, but nobody we trust signed it
            raise _invalid("the token's signature does not verify") from None
        except jwt.DecodeError:
            raise Unauthenticated("the bearer token is not a valid JWT", reason=TOKEN_MALFORMED) from None
        except jwt.ImmatureSignatureError:
            raise _invalid("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidIssuerError:
            raise _invalid("the token was issued by someone this server does not trust") from None
        except jwt.InvalidAudienceError:
            hint = "" if self._audience else " (no audience is configured: set JWT_AUDIENCE)"
            raise _invalid(f"the token is meant for another audience{hint}") from None
        except jwt.MissingRequiredClaimError as error:
            raise _invalid(f"the token has no {error.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise _invalid("the token was refused") from None


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
