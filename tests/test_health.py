"""gRPC health follows readiness: a replica whose database is gone reports NOT_SERVING, and recovers."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from server.app import TodoServer, build_server, run_server
from server.config import Secret, Settings
from tests.postgres import TEST_DATABASE_URL_VARIABLE, PostgresUnavailable, fresh_database, skip_or_fail

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICES = ("", "todo.v1.TaskService")


def statuses(server: TodoServer) -> tuple[int, ...]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return tuple(stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status for s in SERVICES)


def wait_for(server: TodoServer, status: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while statuses(server) != (status, status):
        assert time.monotonic() < deadline, f"health is {statuses(server)}, not {status} after {seconds}s"
        time.sleep(0.05)


def only_failing(server: TodoServer, check: str, seconds: float = 15) -> None:
    """Waits until `check` is the one failing check: a round gives each check one interval to answer, which
    the database's first connection may overrun on a loaded machine."""
    deadline = time.monotonic() + seconds
    while server.readiness.failing != {check}:
        assert time.monotonic() < deadline, f"failing: {set(server.readiness.failing)}, not just {check}"
        time.sleep(0.05)


def test_health_follows_a_named_readiness_check(settings: Settings) -> None:
    jwks_ready = threading.Event()
    todo_server = build_server(dataclasses.replace(settings, health_check_seconds=0.05))
    todo_server.readiness.add_check("jwks", jwks_ready.is_set)  # how the JWKS fetcher plugs in
    todo_server.start()
    try:
        assert statuses(todo_server) == (NOT_SERVING, NOT_SERVING)
        only_failing(todo_server, "jwks")
        jwks_ready.set()
        wait_for(todo_server, SERVING)
        jwks_ready.clear()
        wait_for(todo_server, NOT_SERVING)
    finally:
        todo_server.stop(grace=None)


def test_a_check_that_hangs_counts_as_failing_until_it_answers(settings: Settings) -> None:
    answer = threading.Event()
    todo_server = build_server(dataclasses.replace(settings, health_check_seconds=0.1))
    todo_server.readiness.add_check("hangs", lambda: answer.wait(30))  # a database that never answers
    starting = threading.Thread(target=todo_server.start)
    starting.start()
    starting.join(timeout=10)  # generous: the first round waits one interval (0.1 s) for the check
    try:
        assert not starting.is_alive(), "start() waited on a hung readiness check"
        assert statuses(todo_server) == (NOT_SERVING, NOT_SERVING)
        only_failing(todo_server, "hangs")
        answer.set()
        wait_for(todo_server, SERVING)
    finally:
        answer.set()
        todo_server.stop(grace=None)


@pytest.fixture
def refusable_postgres() -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A fresh PostgreSQL database, and a switch that refuses (False) or allows (True) connections to it."""
    try:
        with fresh_database(os.environ.get(TEST_DATABASE_URL_VARIABLE)) as url:
            name = make_url(url).database
            admin = create_engine(os.environ[TEST_DATABASE_URL_VARIABLE], isolation_level="AUTOCOMMIT")

            def allow_connections(allowed: bool) -> None:
                with admin.connect() as connection:
                    connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
                    if not allowed:  # and cut the connections the server's pool holds open
                        connection.execute(
                            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                            {"name": name},
                        )

            try:
                yield url, allow_connections
            finally:
                allow_connections(True)  # restored even when the test failed, so the drop can connect
                admin.dispose()
    except PostgresUnavailable as reason:
        skip_or_fail(reason)


def test_health_drains_while_postgresql_refuses_connections_and_recovers(
    secret: bytes, refusable_postgres: tuple[str, Callable[[bool], None]]
) -> None:
    url, allow_connections = refusable_postgres
    replica = Settings(
        listen="127.0.0.1:0", database_url=url, better_auth_secret=Secret(secret), max_workers=2, migrate=True,
        health_check_seconds=0.1,
    )  # fmt: skip
    with run_server(replica) as todo_server:
        wait_for(todo_server, SERVING)
        allow_connections(False)
        wait_for(todo_server, NOT_SERVING)
        assert todo_server.readiness.failing == {"database"}
        allow_connections(True)
        wait_for(todo_server, SERVING)


def test_a_health_watch_of_a_made_up_service_holds_nothing_once_it_ends(todo_server: TodoServer) -> None:
    # Health needs no token. grpc_health kept every watched name for the server's life: a client sending
    # Watch calls of new 60 KB names, each cancelled after its first answer, grew the server by 580 MB in 20 s.
    made_up = {f"{n}{'x' * 60_000}" for n in range(20)}
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch
        for name in made_up:
            stream = watch(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert next(stream).status == SERVICE_UNKNOWN
            stream.cancel()
        ended = watch(health_pb2.HealthCheckRequest(service="y" * 60_000), timeout=0.5)  # ended by its deadline
        assert next(ended).status == SERVICE_UNKNOWN
        made_up.add("y" * 60_000)
        deadline = time.monotonic() + 5
        while made_up & todo_server.health.watched_services():
            assert time.monotonic() < deadline, "ended watches still hold the service names they watched"
            time.sleep(0.05)
