"""The issuer's public keys (a JWKS over HTTP), fetched and refreshed by one background thread.

No request ever fetches: a call that meets an unknown `kid` only asks the background thread to refetch
(rate-limited), and a few calls at once wait a bounded moment for it, on their own pool threads. A failed
refresh keeps the last good keys (unlike PyJWKClient, pyjwt #1162); a fetched key set replaces them, even
an empty one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import PyJWKError

from server.auth.jwks_fetch import JwksError, fetch_url
from server.config import is_loopback_url

_log = logging.getLogger("todo.auth.jwks")

# The algorithms each key type can verify. A JWKS never supplies an HMAC key ("oct" is dropped).
ALGORITHMS_BY_KEY_TYPE: Mapping[str, frozenset[str]] = {
    "OKP": frozenset({"EdDSA"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
}
PUBLIC_KEY_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())

Fetcher = Callable[[str, float], bytes]


class SigningKeysLoading(Exception):
    """The key a token names is unknown, and a refetch that may bring it is still in flight: ask again soon."""


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One verification key of the JWKS: its `kid`, type (`kty`), the `alg` it declares if any, the key itself,
    and its JWKS entry as published (`entry`, canonical JSON): two keys are equal when their entries are."""

    kid: str
    key_type: str
    declared_alg: str | None
    key: Any = field(compare=False)
    entry: str


def parse_jwks(body: bytes) -> dict[str, PublishedKey]:
    """The signing keys of a JWKS document by `kid`; keys that cannot verify signatures are skipped."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise JwksError(f"JWKS is not JSON ({error.__class__.__name__})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("JWKS has no 'keys' list")
    keys: dict[str, PublishedKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _is_public_signing_key(entry):
            continue
        try:
            key = jwt.PyJWK(entry).key
            canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            keys[entry["kid"]] = PublishedKey(entry["kid"], entry["kty"], entry.get("alg"), key, canonical)
        except (PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            _log.warning("JWKS key %r skipped: unsupported or invalid", entry["kid"][:64])
    return keys


def _is_public_signing_key(entry: dict[str, Any]) -> bool:
    """Whether a JWKS entry names a public signature key of a type we verify with.

    Types first: the issuer's JSON may hold a list where a string belongs, and a list is no dict key.
    """
    kty, kid, alg = entry.get("kty"), entry.get("kid"), entry.get("alg")
    return (
        isinstance(kty, str)
        and kty in ALGORITHMS_BY_KEY_TYPE
        and isinstance(kid, str)
        and (alg is None or isinstance(alg, str))
        and entry.get("use", "sig") == "sig"
        and "d" not in entry  # a private key has no business in a JWKS: refuse to hold it
    )


def _unchanged_kept(old: dict[str, PublishedKey], new: dict[str, PublishedKey]) -> dict[str, PublishedKey]:
    """`new`, with each key published unchanged since `old` kept as the same object: tokens it verified stay
    in the verified-token cache (which checks `publishes`), and those of a key replaced under its kid go."""
    return {kid: old[kid] if old.get(kid) == key else key for kid, key in new.items()}


class JwksCache:
    """The current keys of one JWKS URL, kept fresh by a daemon thread started with `start()`."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = 300.0,
        min_refetch_seconds: float = 10.0,
        unknown_kid_wait_seconds: float = 1.0,
        max_unknown_kid_waiters: int = 4,
        fetch_timeout_seconds: float = 5.0,
        max_backoff_seconds: float = 60.0,
        fetcher: Fetcher = fetch_url,
        on_first_load: Callable[[], None] | None = None,
        on_refresh: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url
        self._refresh = refresh_seconds
        self._min_refetch = min_refetch_seconds
        self._unknown_kid_wait = unknown_kid_wait_seconds
        self._max_unknown_kid_waiters = max_unknown_kid_waiters
        self._fetch_timeout = fetch_timeout_seconds
        self._max_backoff = max_backoff_seconds
        self._fetch = fetcher
        self._on_first_load = on_first_load
        self._on_refresh = on_refresh
        self._changed = threading.Condition()
        self._keys: dict[str, PublishedKey] = {}
        self._loaded = threading.Event()
        self._fetches_started = 0
        self._fetches_done = 0
        # The fetch that answers the latest unknown-kid refetch: in flight while _fetches_done is below it.
        self._refetch_awaited = 0
        self._unknown_kid_waiters = 0
        self._last_kid_refetch = -float("inf")
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jwks-refresh", daemon=True)

    @property
    def loaded(self) -> bool:
        """Whether a key set holding at least one usable key has been fetched. An empty set does not count:
        at start-up it more likely means a wrong URL than an issuer that trusts nobody."""
        return self._loaded.is_set()

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    def start(self) -> None:
        if self.url.startswith("http://") and not is_loopback_url(self.url):  # allowed by JWT_JWKS_ALLOW_HTTP
            _log.warning(
                "JWKS %s is fetched over plain http: anyone on the network path can swap the keys", self.url
            )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def has_key(self, kid: str) -> bool:
        return kid in self._keys

    def publishes(self, key: PublishedKey) -> bool:
        """Whether `key` is still published: its kid not removed, nor given to another key."""
        return self._keys.get(key.kid) is key

    def key(self, kid: str) -> PublishedKey | None:
        """The key named `kid`, or None if the issuer does not publish it. Call only from a pool thread.

        An unknown kid asks for a refetch, at most one per min_refetch_seconds. While one is in flight, at
        most max_unknown_kid_waiters callers wait for it, each up to unknown_kid_wait_seconds: a caller holds
        a thread and a place among the calls in flight, and made-up kids cost nothing to send. The other
        callers, and a waiter whose wait runs out, get SigningKeysLoading. With no refetch in flight and none
        allowed yet, None at once.
        """
        found = self._keys.get(kid)
        if found is not None:
            return found
        with self._changed:
            now = time.monotonic()
            if now - self._last_kid_refetch >= self._min_refetch:
                self._last_kid_refetch = now
                # A fetch already started may have begun before this request; the next one begins after it.
                self._refetch_awaited = self._fetches_started + 1
                self._wake.set()
            elif not self._refetch_in_flight():
                return self._keys.get(kid)
            if self._unknown_kid_waiters >= self._max_unknown_kid_waiters:
                raise SigningKeysLoading
            self._unknown_kid_waiters += 1
            try:
                self._changed.wait_for(lambda: not self._refetch_in_flight(), timeout=self._unknown_kid_wait)
            finally:
                self._unknown_kid_waiters -= 1
            found = self._keys.get(kid)
            if found is None and self._refetch_in_flight():
                raise SigningKeysLoading
            return found

    def _refetch_in_flight(self) -> bool:
        return self._fetches_done < self._refetch_awaited

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopped.is_set():
            # Cleared before the fetch: a refetch asked for during it runs right after, never gets lost.
            self._wake.clear()
            ok = self._refresh_once()
            if ok:
                backoff, delay = 1.0, self._refresh
            else:
                delay, backoff = backoff, min(backoff * 2, self._max_backoff)
            self._wake.wait(delay)

    def _refresh_once(self) -> bool:
        """Fetches the key set; whether it gave keys to verify with (if not, the next try backs off)."""
        with self._changed:
            self._fetches_started += 1
        try:
            keys = parse_jwks(self._fetch(self.url, self._fetch_timeout))
        except Exception as error:  # any failure: keep the last good keys and retry with backoff
            _log.warning(
                "JWKS refresh from %s failed (%s); keeping %d known keys", self.url, error, len(self._keys)
            )
            keys = None
        with self._changed:
            if keys is not None:  # even an empty set: publishing one is how an issuer revokes every key
                self._keys = _unchanged_kept(self._keys, keys)
            self._fetches_done += 1
            self._changed.notify_all()
        if self._on_refresh is not None:
            self._on_refresh(keys is not None)
        if keys is not None and not keys:
            _log.warning("JWKS at %s holds no usable signing key: every token it signs is refused", self.url)
        if keys and not self._loaded.is_set():
            self._loaded.set()
            _log.info("JWKS loaded from %s: %d keys", self.url, len(keys))
            if self._on_first_load is not None:
                self._on_first_load()
        return bool(keys)
