"""Fixtures: a real todo-server on 127.0.0.1 (built by build_server), served through pytest-grpc's fixtures."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer, run_server
from server.config import Secret, Settings
from tests.postgres import TEST_DATABASE_URL_VARIABLE, PostgresUnavailable, fresh_database, skip_or_fail
from tests.support import User, mint_token

DATABASES = ("sqlite", "postgresql")

# Property tests: a short run in `make test`, a long one in `make soak` (HYPOTHESIS_PROFILE=soak).
hypothesis_settings.register_profile("default", max_examples=40, deadline=None)
hypothesis_settings.register_profile("soak", max_examples=1000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def secret() -> bytes:
    return secrets.token_urlsafe(48).encode()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run (dropped after), or a skip that says why there is none."""
    try:
        with fresh_database(os.environ.get(TEST_DATABASE_URL_VARIABLE)) as url:
            yield url
    except PostgresUnavailable as reason:
        skip_or_fail(reason)


@pytest.fixture(scope="module", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test that uses the server or the database runs once on SQLite and once on PostgreSQL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture(params=DATABASES)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no tables at all, on each backend: for tests of the schema or raw rows."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    try:
        with fresh_database(os.environ.get(TEST_DATABASE_URL_VARIABLE)) as url:
            yield url
    except PostgresUnavailable as reason:
        skip_or_fail(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`@pytest.mark.sqlite_only` tests (they lock the SQLite file by hand) skip their PostgreSQL run."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
        if on_postgres and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="exercises SQLite's file lock; not a PostgreSQL test"))


@pytest.fixture(scope="module")
def settings(secret: bytes, database_url: str) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        better_auth_secret=Secret(secret),
        max_workers=4,
        migrate=True,
    )


@pytest.fixture(scope="module")
def todo_server(settings: Settings) -> Iterator[TodoServer]:
    with run_server(settings) as server:
        yield server


# pytest-grpc's fixtures (grpc_channel, grpc_stub, grpc_create_channel) serve our real server.
@pytest.fixture(scope="module")
def grpc_server(todo_server: TodoServer):  # type: ignore[no-untyped-def]
    return todo_server.grpc_server


@pytest.fixture(scope="module")
def grpc_addr(todo_server: TodoServer) -> str:
    return f"127.0.0.1:{todo_server.port}"


@pytest.fixture(scope="module")
def grpc_stub_cls():  # type: ignore[no-untyped-def]
    return pb_grpc.TaskServiceStub


@pytest.fixture(scope="module")
def make_user(secret: bytes, grpc_stub: pb_grpc.TaskServiceStub) -> Callable[[str], User]:
    """A new user with a fresh random id (so modules never see each other's data) and a valid token."""

    def make(name: str) -> User:
        user_id = f"{name}{secrets.token_hex(8)}"
        return User(user_id, mint_token(secret, user_id), grpc_stub)

    return make


@pytest.fixture
def alice(make_user: Callable[[str], User]) -> User:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[[str], User]) -> User:
    return make_user("bob")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each skip reason once, with how many tests it skipped (pytest's -rs says it once per test site:
    without PostgreSQL, 145 identical lines)."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:5d}  {reason}")
