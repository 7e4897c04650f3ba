"""Token verification settings: BETTER_AUTH_URL alone, the JWT_* overrides, and what must be refused."""

from __future__ import annotations

import pytest

from server.config import ConfigError, load_settings

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
