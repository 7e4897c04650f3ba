"""The access log of a real todo-server: one line per RPC, request ids, and never a token, secret or title."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import ServerProcess, start_server, stop_server
from tests.support import mint_token

pytestmark = pytest.mark.e2e


def call_with_trailers(call, request, metadata):  # type: ignore[no-untyped-def]
    """The call's status code and trailing metadata, whether it succeeded or failed."""
    try:
        _response, outcome = call.with_call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code(), dict(error.trailing_metadata() or ())
    return outcome.code(), dict(outcome.trailing_metadata() or ())


def rpc_lines(server: ServerProcess) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["logger"] == "todo.access"]


def test_json_access_log_has_one_line_per_rpc_and_no_secrets(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--log-format", "json")
    user_id = f"alice{secrets.token_hex(4)}"
    token = mint_token(server.secret.encode(), user_id)
    title = f"secret plans {secrets.token_hex(6)}"
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            auth = (("authorization", f"Bearer {token}"),)
            created = stub.CreateTask(
                pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=title, description=title)),
                metadata=(*auth, ("x-request-id", "bff-req-42")),
                timeout=10,
            ).task
            code, trailers = call_with_trailers(stub.GetTask, pb.GetTaskRequest(name=created.name), auth)
            assert code == grpc.StatusCode.OK
            generated_id = trailers["x-request-id"]
            code, trailers = call_with_trailers(
                stub.ListTasks, pb.ListTasksRequest(parent="users/me"), (("x-request-id", "no-token-call"),)
            )
            assert (code, trailers["x-request-id"]) == (grpc.StatusCode.UNAUTHENTICATED, "no-token-call")
    finally:
        assert stop_server(server) == 0

    lines = rpc_lines(server)
    assert [(line["method"], line["code"], line["request_id"]) for line in lines] == [
        ("/todo.v1.TaskService/CreateTask", "OK", "bff-req-42"),
        ("/todo.v1.TaskService/GetTask", "OK", generated_id),
        ("/todo.v1.TaskService/ListTasks", "UNAUTHENTICATED", "no-token-call"),
    ]
    assert [line["user"] for line in lines] == [user_id, user_id, "-"]
    for line in lines:
        assert str(line["peer"]).startswith("ipv4:127.0.0.1:")
        assert isinstance(line["duration_ms"], float)
        assert line["level"] == "INFO"
    log = server.log()
    for never in (token, token.split(".")[2], server.secret, title):
        assert never not in log


def test_text_log_is_the_default_and_a_forged_request_id_is_replaced(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    forged = "x\nINFO todo.access rpc method=/forged code=OK"
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            code, trailers = call_with_trailers(
                stub.ListTasks,
                pb.ListTasksRequest(parent="users/me"),
                (("x-request-id", forged.replace("\n", " ")),),
            )
    finally:
        stop_server(server)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    request_id = trailers["x-request-id"]
    assert " " not in request_id
    assert len(request_id) == 16
    access = [line for line in server.log().splitlines() if " todo.access " in line]
    assert len(access) == 1
    assert "rpc method=/todo.v1.TaskService/ListTasks code=UNAUTHENTICATED duration_ms=" in access[0]
    assert "user=- peer=ipv4:127.0.0.1:" in access[0]
    assert access[0].endswith(f"request_id={request_id}")
    assert "/forged" not in server.log()
