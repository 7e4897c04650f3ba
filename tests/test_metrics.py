"""Prometheus metrics, scraped over HTTP from a real server after real calls."""

from __future__ import annotations

import dataclasses
import secrets
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server import metrics_endpoint
from server.app import TodoServer, run_server
from server.config import Settings
from server.metrics_endpoint import MAX_SCRAPES_IN_FLIGHT
from tests.support import User, failure_of, mint_token

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_server(settings: Settings) -> Iterator[TodoServer]:
    with run_server(dataclasses.replace(settings, metrics_listen="127.0.0.1:0")) as server:
        yield server


@pytest.fixture(scope="module")
def stub(metrics_server: TodoServer) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{metrics_server.port}") as channel:
        yield pb_grpc.TaskServiceStub(channel)


def scrape(server: TodoServer) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_scrape(server: TodoServer, ready: Callable[[Samples], float], seconds: float = 10) -> Samples:
    """A scrape where `ready` holds: a cancelled stream is counted when its handler notices, a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(server)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpc(method: str, grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": "todo.v1.TaskService", "grpc_method": method}


def test_calls_are_counted_by_method_and_code(
    metrics_server: TodoServer, stub: pb_grpc.TaskServiceStub, secret: bytes
) -> None:
    user_id = f"alice{secrets.token_hex(4)}"
    alice = User(user_id, mint_token(secret, user_id), stub)
    before = scrape(metrics_server)
    for title in ("one", "two", "three"):
        alice.create_task(title)
    missing = failure_of(lambda: alice.get_task("users/me/tasks/" + "0" * 32))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    after = scrape(metrics_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_started_total", **rpc("CreateTask")) == 3
    assert delta("grpc_server_handled_total", **rpc("CreateTask"), grpc_code="OK") == 3
    assert delta("grpc_server_handling_seconds_count", **rpc("CreateTask")) == 3
    assert delta("grpc_server_handling_seconds_sum", **rpc("CreateTask")) > 0
    assert delta("grpc_server_handling_seconds_bucket", **rpc("CreateTask"), le="+Inf") == 3
    assert delta("grpc_server_started_total", **rpc("GetTask")) == 1
    assert delta("grpc_server_handled_total", **rpc("GetTask"), grpc_code="NOT_FOUND") == 1
    assert delta("grpc_server_handled_total", **rpc("GetTask"), grpc_code="OK") == 0
    # As go-grpc-prometheus counts them: a unary call receives one message, and sends one only if it succeeds.
    assert delta("grpc_server_msg_received_total", **rpc("CreateTask")) == 3
    assert delta("grpc_server_msg_sent_total", **rpc("CreateTask")) == 3
    assert delta("grpc_server_msg_received_total", **rpc("GetTask")) == 1
    assert delta("grpc_server_msg_sent_total", **rpc("GetTask")) == 0


def test_auth_failures_are_counted_by_reason(
    metrics_server: TodoServer, stub: pb_grpc.TaskServiceStub, secret: bytes
) -> None:
    before = scrape(metrics_server)
    request = pb.ListTasksRequest(parent="users/me")
    forged = mint_token(secrets.token_bytes(48), "mallory")
    for metadata in ((), (("authorization", f"Bearer {forged}"),), (("authorization", f"Bearer {forged}"),)):
        failure = failure_of(lambda metadata=metadata: stub.ListTasks(request, metadata=metadata, timeout=10))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(metrics_server)
    assert (
        value(after, "todo_auth_failures_total", reason="TOKEN_MISSING")
        - value(before, "todo_auth_failures_total", reason="TOKEN_MISSING")
        == 1
    )
    assert (
        value(after, "todo_auth_failures_total", reason="TOKEN_INVALID")
        - value(before, "todo_auth_failures_total", reason="TOKEN_INVALID")
        == 2
    )
    unauthenticated = rpc("ListTasks") | {"grpc_code": "UNAUTHENTICATED"}
    assert (
        value(after, "grpc_server_handled_total", **unauthenticated)
        - value(before, "grpc_server_handled_total", **unauthenticated)
        == 3
    )


def test_public_health_calls_are_counted_too(metrics_server: TodoServer) -> None:
    labels = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    before = value(scrape(metrics_server), "grpc_server_handled_total", **labels, grpc_code="OK")
    with grpc.insecure_channel(f"127.0.0.1:{metrics_server.port}") as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert value(scrape(metrics_server), "grpc_server_handled_total", **labels, grpc_code="OK") == before + 1


def test_streamed_messages_are_counted_one_by_one(metrics_server: TodoServer) -> None:
    watch = {"grpc_type": "server_stream", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch"}
    reflect = {
        "grpc_type": "bidi_stream",
        "grpc_service": "grpc.reflection.v1alpha.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
    }
    before = scrape(metrics_server)
    with grpc.insecure_channel(f"127.0.0.1:{metrics_server.port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        metrics_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
        metrics_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()
        questions = [reflection_pb2.ServerReflectionRequest(list_services="")] * 2
        answers = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(questions)))
        assert len(answers) == 2
    after = wait_for_scrape(
        metrics_server, lambda samples: value(samples, "grpc_server_handled_total", **watch, grpc_code="CANCELLED")
    )

    def delta(name: str, labels: dict[str, str]) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_msg_received_total", watch) == 1
    assert delta("grpc_server_msg_sent_total", watch) == 3
    assert delta("grpc_server_msg_received_total", reflect) == 2
    assert delta("grpc_server_msg_sent_total", reflect) == 2
    assert delta("grpc_server_handled_total", reflect | {"grpc_code": "OK"}) == 1
    assert delta("grpc_server_handled_total", watch | {"grpc_code": "CANCELLED"}) == 1
    assert delta("grpc_server_handled_total", watch | {"grpc_code": "UNKNOWN"}) == 0


def test_jwks_refreshes_and_database_pool_are_reported(
    metrics_server: TodoServer, stub: pb_grpc.TaskServiceStub, secret: bytes
) -> None:
    metrics_server.metrics.record_jwks_refresh(ok=True)
    metrics_server.metrics.record_jwks_refresh(ok=False)
    User("pooluser", mint_token(secret, "pooluser"), stub).create_task("uses a connection")
    samples = scrape(metrics_server)
    assert value(samples, "todo_jwks_refreshes_total", result="ok") == 1
    assert value(samples, "todo_jwks_refreshes_total", result="error") == 1
    assert value(samples, "todo_db_pool_size") == metrics_server.database.engine.pool.size()
    assert value(samples, "todo_db_pool_connections", state="checked_out") == 0  # every call gave it back
    assert value(samples, "todo_db_pool_connections", state="idle") >= 1


def test_no_metrics_endpoint_unless_asked(todo_server: TodoServer) -> None:
    assert todo_server.metrics_port is None


def _stalled_scrapes(server: TodoServer, count: int) -> list[socket.socket]:
    """`count` connections to the metrics endpoint, each having sent a request line and never the rest."""
    stalled = [socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5) for _ in range(count)]
    for connection in stalled:
        connection.sendall(b"GET /metrics HTTP/1.1\r\n")
    return stalled


def _closed_by_the_server(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_scrapes_that_never_finish_their_request_hold_a_bounded_number_of_connections(
    metrics_server: TodoServer,
) -> None:
    # Each held a thread and a file descriptor for good: 1,016 of them, without any credentials, took every
    # descriptor of a server run with the common limit of 1024, and it stopped accepting gRPC connections.
    stalled = _stalled_scrapes(metrics_server, MAX_SCRAPES_IN_FLIGHT + 20)
    try:
        closed = [connection for connection in stalled if _closed_by_the_server(connection, within=0.2)]
        assert len(closed) >= 20
    finally:
        for connection in stalled:
            connection.close()
    wait_for_scrape(metrics_server, lambda samples: bool(samples))


def test_a_scrape_that_never_finishes_its_request_is_dropped_after_the_read_timeout(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_endpoint, "READ_TIMEOUT_SECONDS", 0.5)
    with run_server(dataclasses.replace(settings, metrics_listen="127.0.0.1:0")) as server:
        stalled = _stalled_scrapes(server, MAX_SCRAPES_IN_FLIGHT)
        try:
            assert all(_closed_by_the_server(connection, within=5) for connection in stalled)
            assert scrape(server)
        finally:
            for connection in stalled:
                connection.close()
