"""The five-minute path, for real: todo-server as a process, `todo token`, and the grpcurl binary."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import BIN, ServerProcess, run, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
_CREATE_TASK = "todo.v1.TaskService/CreateTask"

pytestmark = pytest.mark.e2e


def mint(server: ServerProcess, sub: str) -> str:
    result = run(str(BIN / "todo"), "token", "--sub", sub, "--ttl", "15m", env=server.env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def grpcurl_json(grpcurl: str, server: ServerProcess, method: str, body: dict, token: str | None = None) -> dict:
    headers = ["-H", f"authorization: Bearer {token}"] if token else []
    result = run(grpcurl, "-plaintext", *headers, "-d", json.dumps(body), server.address, method)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_reflection_lists_every_service(grpcurl: str, server: ServerProcess) -> None:
    result = run(grpcurl, "-plaintext", server.address, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "todo.v1.TaskService",
    }
    described = run(grpcurl, "-plaintext", server.address, "describe", "todo.v1.TaskService")
    assert (
        "rpc CreateTask ( .todo.v1.CreateTaskRequest ) returns ( .todo.v1.CreateTaskResponse );"
        in described.stdout
    )


def test_health_check_answers_serving(grpcurl: str, server: ServerProcess) -> None:
    assert grpcurl_json(grpcurl, server, "grpc.health.v1.Health/Check", {}) == {"status": "SERVING"}


def test_create_and_list_with_a_minted_token(grpcurl: str, server: ServerProcess) -> None:
    token = mint(server, "alice")
    created = grpcurl_json(
        grpcurl,
        server,
        "todo.v1.TaskService/CreateTask",
        {"parent": "users/me", "task": {"title": "Buy milk", "priority": "PRIORITY_HIGH"}},
        token,
    )["task"]
    assert created["name"].startswith("users/alice/tasks/")
    listed = grpcurl_json(grpcurl, server, "todo.v1.TaskService/ListTasks", {"parent": "users/me"}, token)
    assert listed["tasks"] == [created]
    assert listed["total_size"] == 1  # grpcurl prints proto field names


def test_no_token_is_refused_by_the_running_server(grpcurl: str, server: ServerProcess) -> None:
    result = run(
        grpcurl, "-plaintext", "-d", '{"parent":"users/me"}', server.address, "todo.v1.TaskService/ListTasks"
    )
    assert result.returncode != 0
    assert "Code: Unauthenticated" in result.stderr
    assert "TOKEN_MISSING" in result.stderr


def test_sigterm_drains_and_exits_zero_without_logging_tokens(grpcurl: str, server: ServerProcess) -> None:
    token = mint(server, "alice")
    grpcurl_json(grpcurl, server, "todo.v1.TaskService/ListTasks", {"parent": "users/me"}, token)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    log = server.log()
    assert "code=OK" in log
    assert "user=alice" in log
    assert token not in log
    assert token.split(".")[2] not in log  # not even the signature
    assert server.secret not in log


def test_a_short_secret_is_refused_at_start() -> None:
    result = run(
        str(BIN / "todo-server"), "--listen", "127.0.0.1:0", env={**os.environ, "BETTER_AUTH_SECRET": "short"}
    )
    assert result.returncode == 2
    assert "at least 32" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_reflection_unlists_the_api_and_the_proto_file_still_works(grpcurl: str, tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-reflection")
    try:
        listed = run(grpcurl, "-plaintext", server.address, "list")
        assert listed.returncode != 0
        assert "does not support the reflection API" in listed.stderr
        proto = ("-import-path", str(REPO / "protos"), "-proto", "todo/v1/task_service.proto")
        headers = ("-H", f"authorization: Bearer {mint(server, 'alice')}")
        body = json.dumps({"parent": "users/me", "task": {"title": "without reflection"}})
        created = run(grpcurl, "-plaintext", *proto, *headers, "-d", body, server.address, _CREATE_TASK)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["task"]["title"] == "without reflection"
        with grpc.insecure_channel(server.address) as channel:  # health is served as before
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert stop_server(server) == 0
