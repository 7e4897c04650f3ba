"""The verified-token cache: bounded, and never serving an entry past its token's exp or its key's removal."""

from __future__ import annotations

from server.auth.verified_cache import VerifiedTokenCache
from server.identity import Identity


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def always(_key: object) -> bool:
    return True


def test_entry_ends_at_the_tokens_exp() -> None:
    clock = Clock()
    cache = VerifiedTokenCache(clock=clock)
    cache.put("t", Identity("alice"), expires_at=1_010, key=None)
    clock.now = 1_009.9
    assert cache.get("t", key_published=always) == Identity("alice")
    clock.now = 1_010
    assert cache.get("t", key_published=always) is None


def test_entry_ends_when_its_key_leaves_the_jwks() -> None:
    cache = VerifiedTokenCache(clock=Clock())
    cache.put("t", Identity("alice"), expires_at=2_000, key="old")
    assert cache.get("t", key_published=lambda key: key != "old") is None


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = VerifiedTokenCache(2, clock=Clock())
    for token in ("a", "b"):
        cache.put(token, Identity(token), expires_at=2_000, key=None)
    assert cache.get("a", key_published=always) is not None  # "b" is now the least recently used
    cache.put("c", Identity("c"), expires_at=2_000, key=None)
    assert len(cache) == 2
    assert cache.get("b", key_published=always) is None
    assert cache.get("a", key_published=always) == Identity("a")


def test_an_already_expired_token_is_not_stored() -> None:
    cache = VerifiedTokenCache(clock=Clock())
    cache.put("t", Identity("alice"), expires_at=999, key=None)
    assert len(cache) == 0
