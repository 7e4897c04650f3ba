"""A configuration that cannot work stops todo-server at once, with one line that says what to fix."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, start_server, stop_server
from tests.tls import make_tls_files

pytestmark = pytest.mark.e2e

GOOD_SECRET = secrets.token_urlsafe(48)


def todo_server(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("BETTER_AUTH_SECRET", "DATABASE_URL")}
    clean = {k: v for k, v in clean.items() if not k.startswith(("TODO_", "OTEL_"))}
    return subprocess.run(
        [str(BIN / "todo-server"), "--listen", "127.0.0.1:0", *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (and nothing on stdout, no traceback)."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("todo-server: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_no_verification_key_is_refused(tmp_path: Path) -> None:
    line = refusal(todo_server(tmp_path))
    assert "no token verification is configured" in line
    assert "BETTER_AUTH_URL" in line
    assert "BETTER_AUTH_SECRET" in line


def test_a_short_secret_is_refused_with_the_fix(tmp_path: Path) -> None:
    line = refusal(todo_server(tmp_path, BETTER_AUTH_SECRET="too-short-secret"))
    assert "BETTER_AUTH_SECRET is 16 bytes; use at least 32" in line
    assert "too-short-secret" not in line


def test_an_unreachable_postgresql_is_refused_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://todo:hunter2-password@127.0.0.1:1/todo"  # nothing listens on port 1
    line = refusal(todo_server(tmp_path, "--database-url", url, BETTER_AUTH_SECRET=GOOD_SECRET))
    assert "cannot use the database at postgresql+psycopg://todo:***@127.0.0.1:1/todo" in line
    assert "DATABASE_URL (or --database-url) points at it" in line
    assert "hunter2" not in line


def test_an_unopenable_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/todo.db"
    line = refusal(todo_server(tmp_path, BETTER_AUTH_SECRET=GOOD_SECRET, DATABASE_URL=url))
    assert "unable to open database file" in line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_address_in_use_is_refused(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        db = f"sqlite:///{tmp_path}/todo.db"
        started = time.monotonic()
        line = refusal(
            todo_server(
                tmp_path,
                *("--metrics-listen", address, "--workers", workers),
                BETTER_AUTH_SECRET=GOOD_SECRET,
                DATABASE_URL=db,
                TODO_MIGRATE="1",
            )
        )
    assert line == f"todo-server: cannot serve metrics on '{address}': Address already in use; pick a free port"
    assert time.monotonic() - started < 10  # refused before any worker is forked, not after draining them


def test_an_unreadable_tls_file_is_refused(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    missing = tmp_path / "no-such-key.pem"
    line = refusal(
        todo_server(
            tmp_path, "--tls-cert", str(tls.server_cert), "--tls-key", str(missing), BETTER_AUTH_SECRET=GOOD_SECRET
        )
    )
    assert f"--tls-key '{missing}' cannot be read: No such file or directory" in line


def test_check_config_shows_tls_files_by_size_and_never_the_key(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    result = todo_server(
        tmp_path,
        "--check-config",
        "--tls-cert",
        str(tls.server_cert),
        "--tls-key",
        str(tls.server_key),
        BETTER_AUTH_SECRET=GOOD_SECRET,
    )
    assert result.returncode == 0, result.stderr
    settings = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert settings["tls_certificate_chain"] == f"<{tls.server_cert.stat().st_size} bytes>"
    assert settings["tls_private_key"] == "Secret('**********')"
    assert "PRIVATE KEY" not in result.stdout


def test_check_config_prints_the_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    result = todo_server(
        tmp_path,
        "--check-config",
        "--log-format",
        "json",
        BETTER_AUTH_SECRET=GOOD_SECRET,
        DATABASE_URL="postgresql+psycopg://todo:hunter2-password@db.internal:5432/todo",
        TODO_METRICS_LISTEN="0.0.0.0:9464",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
    )
    assert result.returncode == 0, result.stderr
    settings = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert settings["database_url"] == "postgresql+psycopg://todo:***@db.internal:5432/todo"
    assert settings["better_auth_secret"] == "Secret('**********')"
    assert settings["listen"] == "127.0.0.1:0"
    assert settings["log_format"] == "json"
    assert settings["metrics_listen"] == "0.0.0.0:9464"
    assert settings["tracing"] == "True"
    assert GOOD_SECRET not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_check_config_shows_the_jwks_and_token_cache_settings(tmp_path: Path) -> None:
    result = todo_server(
        tmp_path,
        "--check-config",
        "--jwks-min-refetch-seconds",
        "2.5",
        BETTER_AUTH_URL="https://app.example",
        TODO_PAGE_TOKEN_SECRET=GOOD_SECRET,
        JWT_JWKS_REFRESH_SECONDS="60",
        JWT_VERIFIED_CACHE_SIZE="500",
    )
    assert result.returncode == 0, result.stderr
    settings = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert settings["jwks_refresh_seconds"] == "60.0"
    assert settings["jwks_min_refetch_seconds"] == "2.5"
    assert settings["verified_token_cache_size"] == "500"


def test_a_jwks_over_plain_http_from_another_machine_is_refused_in_one_line(tmp_path: Path) -> None:
    line = refusal(
        todo_server(tmp_path, BETTER_AUTH_URL="http://auth.internal:3000", TODO_PAGE_TOKEN_SECRET=GOOD_SECRET)
    )
    assert "'http://auth.internal:3000/api/auth/jwks'" in line
    assert "use https://, or set JWT_JWKS_ALLOW_HTTP=1" in line


def test_a_jwks_over_plain_http_allowed_by_the_operator_is_warned_about(tmp_path: Path) -> None:
    env = {"BETTER_AUTH_URL": "http://192.0.2.1:9", "JWT_JWKS_ALLOW_HTTP": "1"}  # TEST-NET-1: nobody answers
    server = start_server(tmp_path, env=env)
    try:
        warned = [line for line in server.log().splitlines() if "fetched over plain http" in line]
        assert len(warned) == 1, server.log()
        assert " WARNING " in warned[0]
        assert "http://192.0.2.1:9/api/auth/jwks" in warned[0]
    finally:
        assert stop_server(server) == 0


def test_a_bad_jwks_refresh_interval_is_refused_in_one_line(tmp_path: Path) -> None:
    line = refusal(todo_server(tmp_path, "--jwks-refresh-seconds", "soon", BETTER_AUTH_SECRET=GOOD_SECRET))
    assert line == "todo-server: --jwks-refresh-seconds 'soon' is not a number of seconds"


@pytest.mark.parametrize("delay", ["-1", "soon", "nan"])
def test_a_bad_drain_delay_is_refused_in_one_line(tmp_path: Path, delay: str) -> None:
    line = refusal(todo_server(tmp_path, TODO_DRAIN_DELAY_SECONDS=delay, BETTER_AUTH_SECRET=GOOD_SECRET))
    assert line == f"todo-server: TODO_DRAIN_DELAY_SECONDS {delay!r} is not a number of seconds, 0 or more"


@pytest.mark.parametrize(
    ("listen", "complaint"),
    [
        pytest.param("127.0.0.1:99999", "port 99999 is not between 0 and 65535", id="port-too-big"),
        pytest.param("50071", "HOST:PORT", id="port-alone"),
        pytest.param(":50071", "HOST:PORT", id="no-host"),
        pytest.param("127.0.0.1:http", "HOST:PORT", id="port-not-a-number"),
        pytest.param("no-such-host.invalid:50071", "'no-such-host.invalid' is not a name", id="unresolvable"),
    ],
)
def test_a_listen_address_that_cannot_be_served_is_refused(tmp_path: Path, listen: str, complaint: str) -> None:
    # gRPC would take port 99999 as 34463 (it wraps), and say nothing.
    line = refusal(todo_server(tmp_path, "--listen", listen, BETTER_AUTH_SECRET=GOOD_SECRET))
    assert f"--listen {listen!r}" in line
    assert complaint in line


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        pytest.param("not a url", "is not a database URL", id="not-a-url"),
        pytest.param("mysql://todo:hunter2-password@db/todo", "SQLite", id="mysql"),
        pytest.param(
            "postgresql+psycopg2://todo:hunter2-password@db/todo", "postgresql+psycopg://", id="psycopg2"
        ),
        pytest.param("sqlite+aiosqlite:///todo.db", "sqlite:///", id="async-sqlite"),
    ],
)
@pytest.mark.parametrize("command", [[], ["migrate"]], ids=["serve", "migrate"])
def test_a_database_url_todo_server_cannot_use_is_refused_in_one_line(
    tmp_path: Path, command: list[str], url: str, complaint: str
) -> None:
    result = subprocess.run(
        [str(BIN / "todo-server"), *command, "--database-url", url],
        cwd=tmp_path,
        env={**os.environ, "BETTER_AUTH_SECRET": GOOD_SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    line = refusal(result)
    assert complaint in line
    assert "hunter2" not in line


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_platform_style_postgresql_url_is_taken_as_psycopg(tmp_path: Path, scheme: str) -> None:
    # Heroku, Render, Fly and others hand out postgres:// URLs; libpq takes them, so we do too.
    url = f"{scheme}://todo:hunter2-password@db.internal:5432/todo"
    result = todo_server(tmp_path, "--check-config", "--database-url", url, BETTER_AUTH_SECRET=GOOD_SECRET)
    assert result.returncode == 0, result.stderr
    settings = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert settings["database_url"] == "postgresql+psycopg://todo:***@db.internal:5432/todo"


def test_help_names_the_secrets_and_the_migrate_command(tmp_path: Path) -> None:
    result = todo_server(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for needed in ("BETTER_AUTH_SECRET", "TODO_PAGE_TOKEN_SECRET", "todo-server migrate"):
        assert needed in text
