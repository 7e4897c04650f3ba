"""Fixtures: a real todo-server on 127.0.0.1 (built by build_server), served through pytest-grpc's fixtures."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings as hypothesis_settings
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer, run_server
from server.config import Secret, Settings
from tests.support import User, mint_token

# Property tests: a short run in `make test`, a long one in `make soak` (HYPOTHESIS_PROFILE=soak).
hypothesis_settings.register_profile("default", max_examples=40, deadline=None)
hypothesis_settings.register_profile("soak", max_examples=1000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def secret() -> bytes:
    return secrets.token_urlsafe(48).encode()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture(scope="module")
def settings(secret: bytes, database_url: str) -> Settings:
    return Settings(
        listen="127.0.0.1:0", database_url=database_url, better_auth_secret=Secret(secret), max_workers=4
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
