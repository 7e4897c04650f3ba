"""Minting development tokens shaped like Better Auth's: HS256 with BETTER_AUTH_SECRET, or EdDSA with a local
Ed25519 key whose public half `todo jwks` publishes."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm


def _claims(subject: str, ttl_seconds: int, extra: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    claims.update({key: value for key, value in extra.items() if value})
    return claims


def mint_hs256_token(
    *, secret: bytes, subject: str, ttl_seconds: int = 3600, email: str | None = None, name: str | None = None
) -> str:
    """A token for `subject`, valid from now for `ttl_seconds`."""
    return jwt.encode(_claims(subject, ttl_seconds, {"email": email, "name": name}), secret, algorithm="HS256")


def load_or_create_ed25519_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`, made (mode 0600) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return key


def public_jwk(key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """The public half as a JWKS entry like Better Auth's, `kid` = its RFC 7638 thumbprint."""
    entry = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps({"crv": entry["crv"], "kty": entry["kty"], "x": entry["x"]}, separators=(",", ":"))
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": entry["x"], "alg": "EdDSA", "use": "sig", "kid": kid}


def jwks_document(key: ed25519.Ed25519PrivateKey) -> dict[str, list[dict[str, str]]]:
    return {"keys": [public_jwk(key)]}


def mint_eddsa_token(
    *,
    key: ed25519.Ed25519PrivateKey,
    subject: str,
    ttl_seconds: int = 900,
    issuer: str | None = None,
    email: str | None = None,
) -> str:
    """An EdDSA token as Better Auth's jwt plugin makes it: `iss` = `aud` = the base URL when given."""
    claims = _claims(subject, ttl_seconds, {"email": email, "iss": issuer, "aud": issuer, "id": subject})
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})
