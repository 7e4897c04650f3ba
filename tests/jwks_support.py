"""A real JWKS endpoint on 127.0.0.1 and real signing keys, for the JWKS tests."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


@dataclass
class SigningKey:
    """A private key with its `kid` and `alg`; `jwk()` is its public half as a JWKS entry."""

    alg: str
    private: Any
    kid: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = {"EdDSA": OKPAlgorithm, "ES256": ECAlgorithm, "RS256": RSAAlgorithm}[self.alg]
        entry = codec.to_jwk(public, as_dict=True)
        return {**entry, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})


def new_key(alg: str = "EdDSA") -> SigningKey:
    if alg == "EdDSA":
        return SigningKey(alg, ed25519.Ed25519PrivateKey.generate())
    if alg == "ES256":
        return SigningKey(alg, ec.generate_private_key(ec.SECP256R1()))
    return SigningKey(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


class JwksServer:
    """Serves `keys` as a JWKS at `url`; counts fetches; can answer late (`delay`), fail (`status`), redirect
    (`status` and `location`), or send its answer a byte at a time (`drip_seconds` apart; from the status
    line, or from the body on)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = list(keys)
        self.entries: list[dict[str, Any]] = []  # raw entries served after the keys' own: malformed ones
        self.delay = 0.0
        self.status = 200
        self.location: str | None = None
        self.drip_seconds = 0.0
        self.drip_headers = True
        self.fetches = 0
        self._stopping = threading.Event()
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                time.sleep(jwks.delay)
                body = json.dumps({"keys": [key.jwk() for key in jwks.keys] + jwks.entries}).encode()
                head = (
                    f"HTTP/1.0 {jwks.status} {HTTPStatus(jwks.status).phrase}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    + (f"Location: {jwks.location}\r\n" if jwks.location else "")
                    + "\r\n"
                ).encode()
                pause = jwks.drip_seconds  # this answer's pace, whatever later ones get
                dripped = (head + body if jwks.drip_headers else body) if pause else b""
                self.wfile.write((head + body)[: len(head + body) - len(dripped)])
                for byte in dripped:
                    if jwks._stopping.wait(pause):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                    except OSError:  # the client gave up
                        return

            def log_message(self, *_: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.url = f"{self.base_url}/api/auth/jwks"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            self._http.shutdown()
            self._http.server_close()


def claims_for(sub: Any, *, issuer: str, audience: str, ttl: int = 900, **extra: Any) -> dict[str, Any]:
    """Claims shaped like Better Auth's jwt plugin's: sub, iat, exp = iat + 15 min, iss = aud = base URL."""
    now = int(time.time())
    body = {"sub": sub, "id": sub, "iat": now, "exp": now + ttl, "iss": issuer, "aud": audience, **extra}
    return {k: v for k, v in body.items() if v is not None}


def assert_keys_loaded(server: Any, seconds: float = 10.0) -> None:
    """The server's JWKS cache holds keys (fetched by its background thread) within `seconds`."""
    assert server.jwks is not None
    assert server.jwks.wait_loaded(seconds)
