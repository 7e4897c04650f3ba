"""Token verification settings: BETTER_AUTH_URL alone, the JWT_* overrides, and what must be refused."""

from __future__ import annotations

import pytest

from server.app import build_verifier
from server.config import ConfigError, load_settings
from tests.support import mint_token

PAGE = {"TODO_PAGE_TOKEN_SECRET": "p" * 32}


def test_better_auth_url_alone_means_its_jwks_issuer_and_audience() -> None:
    settings = load_settings([], {"BETTER_AUTH_URL": "https://app.example/", **PAGE})
    assert settings.jwks_url() == "https://app.example/api/auth/jwks"
    assert settings.expected_issuer() == "https://app.example"
    assert settings.expected_audience() == ("https://app.example",)
    assert settings.better_auth_secret is None


def test_jwt_variables_override_each_part() -> None:
    env = {
        "BETTER_AUTH_URL": "https://app.example",
        "JWT_JWKS_URL": "https://keys.example/jwks.json",
        "JWT_ISSUER": "https://issuer.example",
        "JWT_AUDIENCE": "tasks, bff",
        "JWT_ALGORITHMS": "EdDSA,ES256",
        "JWT_LEEWAY_SECONDS": "5",
        **PAGE,
    }
    settings = load_settings([], env)
    assert settings.jwks_url() == "https://keys.example/jwks.json"
    assert settings.expected_issuer() == "https://issuer.example"
    assert settings.expected_audience() == ("tasks", "bff")
    assert settings.jwt_algorithms == ("EdDSA", "ES256")
    assert settings.jwt_leeway_seconds == 5


def test_flags_win_over_variables() -> None:
    argv = ["--better-auth-url", "https://flag.example", "--jwt-audience", "a", "--jwt-leeway-seconds", "0"]
    settings = load_settings(argv, {"BETTER_AUTH_URL": "https://env.example", **PAGE})
    assert settings.expected_issuer() == "https://flag.example"
    assert settings.expected_audience() == ("a",)
    assert settings.jwt_leeway_seconds == 0


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        pytest.param({}, "no token verification", id="nothing"),
        pytest.param({"BETTER_AUTH_URL": "https://app.example"}, "TODO_PAGE_TOKEN_SECRET", id="no-page-secret"),
        pytest.param(
            {"BETTER_AUTH_URL": "https://app.example", "TODO_PAGE_TOKEN_SECRET": "short"}, "32", id="short-page"
        ),
        pytest.param({"BETTER_AUTH_URL": "app.example", **PAGE}, "http", id="url-without-scheme"),
        pytest.param({"BETTER_AUTH_SECRET": "s" * 32, "JWT_ALGORITHMS": "none"}, "none", id="alg-none"),
        pytest.param({"BETTER_AUTH_SECRET": "s" * 32, "JWT_LEEWAY_SECONDS": "-1"}, "LEEWAY", id="neg-leeway"),
    ],
)
def test_unworkable_settings_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_settings([], env)


def test_hs256_secret_alone_keeps_working() -> None:
    settings = load_settings([], {"BETTER_AUTH_SECRET": "s" * 32})
    assert settings.jwks_url() is None
    assert len(settings.page_token_key()) == 32


def test_jwks_refresh_refetch_and_token_cache_have_defaults() -> None:
    settings = load_settings([], {"BETTER_AUTH_URL": "https://app.example", **PAGE})
    assert settings.jwks_refresh_seconds == 300
    assert settings.jwks_min_refetch_seconds == 10
    assert settings.verified_token_cache_size == 10_000


def test_jwks_refresh_refetch_and_token_cache_come_from_variables_and_flags() -> None:
    env = {
        "BETTER_AUTH_URL": "https://app.example",
        "JWT_JWKS_REFRESH_SECONDS": "60",
        "JWT_JWKS_MIN_REFETCH_SECONDS": "2.5",
        "JWT_VERIFIED_CACHE_SIZE": "500",
        **PAGE,
    }
    from_env = load_settings([], env)
    assert (from_env.jwks_refresh_seconds, from_env.jwks_min_refetch_seconds) == (60, 2.5)
    assert from_env.verified_token_cache_size == 500
    argv = ["--jwks-refresh-seconds", "120", "--jwks-min-refetch-seconds", "30", "--jwt-verified-cache-size", "0"]
    from_flags = load_settings(argv, env)
    assert (from_flags.jwks_refresh_seconds, from_flags.jwks_min_refetch_seconds) == (120, 30)
    assert from_flags.verified_token_cache_size == 0  # 0 turns the cache off


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        pytest.param({"JWT_JWKS_REFRESH_SECONDS": "0"}, "REFRESH_SECONDS must be positive", id="refresh-0"),
        pytest.param({"JWT_JWKS_REFRESH_SECONDS": "soon"}, "JWT_JWKS_REFRESH_SECONDS 'soon'", id="refresh-text"),
        pytest.param(
            {"JWT_JWKS_MIN_REFETCH_SECONDS": "0"}, "JWT_JWKS_MIN_REFETCH_SECONDS must be positive", id="refetch-0"
        ),
        pytest.param(
            {"JWT_JWKS_MIN_REFETCH_SECONDS": "inf"}, "REFETCH_SECONDS 'inf' is not a number", id="refetch-inf"
        ),
        pytest.param({"JWT_VERIFIED_CACHE_SIZE": "-1"}, "CACHE_SIZE must be 0 or more", id="cache-neg"),
        pytest.param({"JWT_VERIFIED_CACHE_SIZE": "1e3"}, "JWT_VERIFIED_CACHE_SIZE '1e3'", id="cache-not-int"),
    ],
)
def test_unworkable_jwks_and_cache_settings_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_settings([], {"BETTER_AUTH_URL": "https://app.example", **PAGE, **env})


@pytest.mark.parametrize(("size", "kept"), [("2", 2), ("0", 0)])
def test_verified_cache_size_bounds_the_cache(size: str, kept: int) -> None:
    secret = "s" * 32
    verifier = build_verifier(load_settings(["--jwt-verified-cache-size", size], {"BETTER_AUTH_SECRET": secret}))
    for user in ("ann", "ben", "cat"):
        assert verifier.verify(mint_token(secret.encode(), user)).user_id == user
    assert verifier.cache is not None
    assert len(verifier.cache) == kept


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"BETTER_AUTH_URL": "http://auth.internal:3000"}, id="better-auth-url"),
        pytest.param(
            {"BETTER_AUTH_URL": "https://app.example", "JWT_JWKS_URL": "http://keys.example/jwks"}, id="jwks-url"
        ),
        # Hosts that only start like a loopback name.
        pytest.param({"BETTER_AUTH_URL": "http://localhost.attacker.example"}, id="localhost-prefix"),
        pytest.param({"BETTER_AUTH_URL": "http://127.0.0.1.attacker.example"}, id="ip-prefix"),
        pytest.param({"BETTER_AUTH_URL": "http://localhost@attacker.example"}, id="userinfo"),
    ],
)
def test_a_jwks_over_plain_http_from_another_machine_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"plain http.*JWT_JWKS_ALLOW_HTTP=1"):
        load_settings([], {**env, **PAGE})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://127.0.0.2", "http://localhost:3000", "http://[::1]:3000"]
)
def test_a_jwks_over_plain_http_from_this_machine_is_accepted(url: str) -> None:
    assert load_settings([], {"BETTER_AUTH_URL": url, **PAGE}).jwks_url() == f"{url}/api/auth/jwks"


@pytest.mark.parametrize(
    ("argv", "env"),
    [([], {"JWT_JWKS_ALLOW_HTTP": "1"}), (["--jwks-allow-http"], {})],
    ids=["variable", "flag"],
)
def test_plain_http_from_another_machine_needs_the_explicit_opt_in(argv: list[str], env: dict[str, str]) -> None:
    settings = load_settings(argv, {"BETTER_AUTH_URL": "http://auth.internal:3000", **env, **PAGE})
    assert settings.jwks_url() == "http://auth.internal:3000/api/auth/jwks"
    assert settings.jwks_allow_http


def test_plain_http_issuer_is_fine_when_the_keys_come_over_https() -> None:
    env = {"BETTER_AUTH_URL": "http://auth.internal:3000", "JWT_JWKS_URL": "https://keys.example/jwks", **PAGE}
    assert load_settings([], env).expected_issuer() == "http://auth.internal:3000"
