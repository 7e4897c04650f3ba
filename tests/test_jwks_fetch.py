"""Fetching a JWKS from an endpoint that stalls or redirects, or past a proxy: real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from server.auth.jwks import JwksCache, parse_jwks
from server.auth.jwks_fetch import JwksError, fetch_url
from tests.jwks_support import JwksServer, new_key
from tests.support import wait_until

# A byte every 0.1 s beats any per-socket-operation timeout: only a deadline for the whole fetch ends it.
DRIP_SECONDS = 0.1
FETCH_TIMEOUT = 0.5


@pytest.mark.parametrize("drip_headers", [True, False], ids=["from-the-status-line", "body-only"])
def test_an_endpoint_sending_a_byte_at_a_time_is_cut_off_at_the_fetch_deadline(drip_headers: bool) -> None:
    with JwksServer([new_key()]).running() as jwks:
        jwks.drip_seconds, jwks.drip_headers = DRIP_SECONDS, drip_headers
        started = time.monotonic()
        with pytest.raises(JwksError, match=f"within {FETCH_TIMEOUT:g}s"):
            fetch_url(jwks.url, FETCH_TIMEOUT)
        assert time.monotonic() - started < FETCH_TIMEOUT + 0.3


def test_a_dripping_endpoint_does_not_stop_the_refresh_thread() -> None:
    old, new = new_key(), new_key()
    with JwksServer([old]).running() as jwks:
        cache = JwksCache(jwks.url, refresh_seconds=0.2, fetch_timeout_seconds=FETCH_TIMEOUT)
        cache.start()
        try:
            assert cache.wait_loaded(5)
            jwks.drip_seconds = DRIP_SECONDS
            fetches = jwks.fetches
            assert wait_until(lambda: jwks.fetches >= fetches + 1)  # a refresh is now stuck on the drip
            jwks.keys, jwks.drip_seconds = [new], 0.0
            # The stuck fetch gives up at its deadline; a retry (1 s backoff) then gets the new key.
            assert wait_until(lambda: cache.has_key(new.kid), seconds=FETCH_TIMEOUT + 3)
            assert not cache.has_key(old.kid)
        finally:
            cache.stop()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_error_names_where_it_pointed(status: int) -> None:
    # Followed, it could lead anywhere: another host, plain http, ftp.
    with JwksServer([new_key()]).running() as elsewhere, JwksServer([]).running() as jwks:
        jwks.status, jwks.location = status, elsewhere.url
        with pytest.raises(JwksError, match=rf"HTTP {status} .*'{re.escape(elsewhere.url)}'"):
            fetch_url(jwks.url, FETCH_TIMEOUT)
        assert elsewhere.fetches == 0


@pytest.fixture
def proxy_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    """A forward proxy named by http_proxy and https_proxy that answers every request with keys of its own."""
    with JwksServer([new_key()]).running() as proxy:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(name, proxy.base_url)
        yield proxy


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_jwks_url_is_fetched_directly_not_through_the_proxy(
    proxy_in_environment: JwksServer, host: str
) -> None:
    # Plain http is allowed to this machine only because it crosses no network; a proxy would carry it.
    issuer_key = new_key()
    with JwksServer([issuer_key]).running() as jwks:
        keys = parse_jwks(fetch_url(jwks.url.replace("127.0.0.1", host), FETCH_TIMEOUT))
    assert set(keys) == {issuer_key.kid}
    assert proxy_in_environment.fetches == 0


def test_a_jwks_url_elsewhere_still_goes_through_the_proxy(proxy_in_environment: JwksServer) -> None:
    # Corporate egress may allow nothing else; the name is never resolved here, the proxy gets it.
    keys = parse_jwks(fetch_url("http://issuer.example/api/auth/jwks", FETCH_TIMEOUT))
    assert set(keys) == {proxy_in_environment.keys[0].kid}
    assert proxy_in_environment.fetches == 1
