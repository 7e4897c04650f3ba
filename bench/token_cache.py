"""What the verified-token cache saves: one BFF token verified N times, with and without the cache.

Run: .venv/bin/python -m bench.token_cache [N]. Prints per-verification times and their ratio, measured
in the same run (absolute numbers depend on the machine; the ratio is the figure the README quotes).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import jwt

from server.auth.jwks import JwksCache
from server.auth.tokens import TokenVerifier
from server.auth.verified_cache import VerifiedTokenCache
from tests.jwks_support import claims_for, new_key

ISSUER = "https://app.example"


def _per_call_microseconds(verifier: TokenVerifier, token: str, rounds: int) -> float:
    verifier.verify(token)
    started = time.perf_counter()
    for _ in range(rounds):
        verifier.verify(token)
    return (time.perf_counter() - started) / rounds * 1e6


def _token_and_verifiers(alg: str) -> tuple[str, TokenVerifier, TokenVerifier, JwksCache | None]:
    """A Better Auth-shaped token signed with `alg`, a verifier without the cache and one with it."""
    claims = claims_for("alice", issuer=ISSUER, audience=ISSUER)
    if alg == "HS256":
        secret = b"s" * 48
        token = jwt.encode(claims, secret, algorithm="HS256")
        sources: dict[str, Any] = {"hs256_secret": secret}
        jwks = None
    else:
        key = new_key(alg)
        body = json.dumps({"keys": [key.jwk()]}).encode()
        jwks = JwksCache(f"{ISSUER}/api/auth/jwks", fetcher=lambda _url, _timeout: body)
        jwks.start()
        jwks.wait_loaded(5)
        token = key.sign(claims)
        sources = {"jwks": jwks}
    common = {"issuer": ISSUER, "audience": (ISSUER,), **sources}
    return token, TokenVerifier(**common), TokenVerifier(**common, cache=VerifiedTokenCache()), jwks


def main(rounds: int = 20_000) -> None:
    print(f"{'alg':<6} {'uncached µs':>12} {'cached µs':>10} {'ratio':>7}")
    for alg in ("EdDSA", "ES256", "RS256", "HS256"):
        token, uncached_verifier, cached_verifier, jwks = _token_and_verifiers(alg)
        uncached = _per_call_microseconds(uncached_verifier, token, rounds)
        cached = _per_call_microseconds(cached_verifier, token, rounds)
        print(f"{alg:<6} {uncached:>12.1f} {cached:>10.1f} {uncached / cached:>6.1f}x")
        if jwks is not None:
            jwks.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
