"""Tokens already verified, so a caller reusing one token pays the signature check once."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from server.identity import Identity


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: Identity
    expires_at: float
    key: object  # what verified the token's signature (a JWKS key), or None (the HS256 secret)


class VerifiedTokenCache:
    """A bounded LRU of token digest → Identity. An entry is dropped at the token's `exp` (never later)
    and whenever the JWKS key that verified it is no longer published, or its kid now names another key."""

    def __init__(self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _digest(token: str) -> bytes:
        # Keyed by digest: the cache holds no usable token.
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str, *, key_published: Callable[[object], bool]) -> Identity | None:
        digest = self._digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                self.misses += 1
                return None
            if self._clock() >= entry.expires_at or not key_published(entry.key):
                del self._entries[digest]
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return entry.identity

    def put(self, token: str, identity: Identity, *, expires_at: float, key: object) -> None:
        if self._max <= 0 or expires_at <= self._clock():
            return
        digest = self._digest(token)
        with self._lock:
            self._entries[digest] = _Entry(identity, float(expires_at), key)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
