"""Hostile input never gets UNKNOWN or INTERNAL: every request message, fuzzed, and bytes that do not decode."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer, run_server
from server.config import Settings
from server.limits import MAX_RECEIVE_MESSAGE_BYTES, PUBLIC_CALLS_PER_PEER
from server.tasks import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH
from tests.stalled_calls import own_connection, stalled_calls
from tests.support import User, failure_of

# What a hostile request may get. UNKNOWN or INTERNAL would mean an exception escaped our validation.
_ACCEPTABLE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_METHODS = ("CreateTask", "GetTask", "ListTasks", "UpdateTask", "DeleteTask")
_SORT_WORDS = ("create_time", "update_time", "due_time", "title", "priority", "asc", "desc", ",", " ", "")
_FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Every string the wire allows in a proto3 string: any code point but a surrogate, control characters included.
hostile_text = st.one_of(
    st.text(max_size=64),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=32),
    st.sampled_from(["users/me", "users/me/tasks/", "users/me/tasks/x", "users/../tasks/1", "users/%00/tasks/1"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "\x00", "é", "😀"]), st.integers(0, 5000)),
    st.sampled_from(["x" * 1_000_000, "\x00" * 1_000_000]),  # 1 MB strings
)
names = st.one_of(hostile_text, st.builds("users/me/tasks/{}".format, hostile_text))
order_by = st.one_of(hostile_text, st.lists(st.sampled_from(_SORT_WORDS), max_size=6).map(" ".join))
timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.integers(-(2**63), 2**63 - 1),
    nanos=st.integers(-(2**31), 2**31 - 1),
)
tasks = st.builds(
    pb.Task,
    name=names,
    title=hostile_text,
    description=hostile_text,
    completed=st.booleans(),
    priority=st.integers(-(2**31), 2**31 - 1),
    due_time=timestamps,
    etag=hostile_text,
)
requests: dict[str, st.SearchStrategy[Any]] = {
    "CreateTask": st.builds(pb.CreateTaskRequest, parent=hostile_text, task=tasks, request_id=hostile_text),
    "GetTask": st.builds(pb.GetTaskRequest, name=names),
    "ListTasks": st.builds(
        pb.ListTasksRequest,
        parent=hostile_text,
        page_size=st.integers(-(2**31), 2**31 - 1),
        page_token=hostile_text,
        completed=st.none() | st.booleans(),
        query=hostile_text,
        order_by=order_by,
    ),
    "UpdateTask": st.builds(
        pb.UpdateTaskRequest,
        task=tasks,
        update_mask=st.builds(
            field_mask_pb2.FieldMask,
            paths=st.lists(
                st.one_of(hostile_text, st.sampled_from(["title", "*", "name", "etag", "create_time"])),
                max_size=5,
            ),
        ),
    ),
    "DeleteTask": st.builds(pb.DeleteTaskRequest, name=names, etag=hostile_text),
}


def _call(alice: User, method: str, request: Any) -> grpc.StatusCode:
    try:
        getattr(alice.stub, method)(request, metadata=alice.metadata, timeout=20)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", _METHODS)
@_FUZZ
@given(data=st.data())
def test_fuzzed_requests_never_get_unknown_or_internal(alice: User, method: str, data: st.DataObject) -> None:
    request = data.draw(requests[method])
    assert _call(alice, method, request) in _ACCEPTABLE


@pytest.fixture
def raw_call(todo_server: TodoServer, alice: User) -> Iterator[Callable[[str, bytes], grpc.StatusCode]]:
    """Sends raw bytes as the request of a TaskService method, through a channel that does not encode."""
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:

        def call(method: str, body: bytes) -> grpc.StatusCode:
            try:
                channel.unary_unary(f"/todo.v1.TaskService/{method}")(body, metadata=alice.metadata, timeout=20)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        yield call


@pytest.mark.parametrize("method", _METHODS)
@_FUZZ
@given(body=st.binary(max_size=256))
def test_random_bytes_never_get_unknown_or_internal(
    raw_call: Callable[[str, bytes], grpc.StatusCode], method: str, body: bytes
) -> None:
    assert raw_call(method, body) in _ACCEPTABLE


# A lone surrogate (U+D800 as UTF-8 would spell it) and a stray continuation byte: neither is valid UTF-8,
# which proto3 requires of a string, so the request does not decode.
@pytest.mark.parametrize("bad_utf8", [b"\xed\xa0\x80", b"\x80", b"\xff\xfe"])
def test_a_string_that_is_not_utf8_is_invalid_argument(
    todo_server: TodoServer, alice: User, bad_utf8: bytes
) -> None:
    body = b"\x0a" + bytes([len(bad_utf8)]) + bad_utf8  # GetTaskRequest.name, field 1, length-delimited
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
        call = channel.unary_unary("/todo.v1.TaskService/GetTask")
        failure = failure_of(lambda: call(body, metadata=alice.metadata, timeout=10))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in failure.violations
    assert "deserializing" not in failure.message


def test_undecodable_bytes_to_a_public_service_are_invalid_argument(todo_server: TodoServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        failure = failure_of(lambda: call(b"\x0a\x01\xff", timeout=10))  # service: invalid UTF-8
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


def test_undecodable_bytes_from_a_caller_without_a_token_are_unauthenticated(todo_server: TodoServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
        call = channel.unary_unary("/todo.v1.TaskService/GetTask")
        failure = failure_of(lambda: call(b"\x0a\x01\xff", timeout=10))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_message_over_the_receive_limit_is_resource_exhausted(alice: User) -> None:
    oversized = "a" * (MAX_RECEIVE_MESSAGE_BYTES + 1)
    failure = failure_of(lambda: alice.create_task(oversized))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert alice.list_tasks().total_size == 0


def test_a_compressed_message_over_the_receive_limit_once_inflated_is_resource_exhausted(alice: User) -> None:
    # ~1 KB on the wire, 1 MB inflated: the limit must apply to what the server would have to hold.
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="bomb", description="a" * 1_000_000))
    call = alice.stub.CreateTask
    failure = failure_of(
        lambda: call(request, metadata=alice.metadata, compression=grpc.Compression.Gzip, timeout=10)
    )
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert alice.list_tasks().total_size == 0


def test_the_largest_valid_request_is_within_the_receive_limit(alice: User) -> None:
    task = alice.create_task("short")
    task.title = "😀" * TITLE_MAX_LENGTH  # 4 bytes each in UTF-8
    task.description = "😀" * DESCRIPTION_MAX_LENGTH
    task.due_time.FromSeconds(253402300799)  # 9999-12-31: the largest timestamp, the most varint bytes
    task.priority = pb.PRIORITY_HIGH
    request = pb.UpdateTaskRequest(task=task, update_mask=field_mask_pb2.FieldMask(paths=["*"]))
    assert request.ByteSize() * 3 < MAX_RECEIVE_MESSAGE_BYTES  # room for fields yet to come
    updated = alice.stub.UpdateTask(request, metadata=alice.metadata, timeout=10).task
    assert (updated.title, updated.description) == (task.title, task.description)


def test_many_idle_connections_do_not_stop_others_being_served(todo_server: TodoServer, alice: User) -> None:
    stalled: list[socket.socket] = []
    try:
        for _ in range(200):  # connections that never speak HTTP/2, and one that stops mid-preface
            stalled.append(socket.create_connection(("127.0.0.1", todo_server.port), timeout=5))
        stalled[-1].sendall(b"PRI * HTTP/2.0\r\n")
        assert alice.create_task("served while others stall").title == "served while others stall"
    finally:
        for connection in stalled:
            connection.close()


def test_stalled_request_streams_do_not_stop_others_being_served(
    todo_server: TodoServer, settings: Settings, alice: User
) -> None:
    # 16 x the test server's --max-workers, 4 x the default: each stalled call parks a thread, not a worker.
    with stalled_calls(todo_server.port, 16 * settings.max_workers, alice.metadata) as stalled:
        started = time.monotonic()
        for _ in range(10):
            alice.stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=alice.metadata, timeout=2)
        assert time.monotonic() - started < 2
        assert not any(call.done() for call in stalled)  # held all along by the server, not refused


def test_open_health_watches_do_not_stop_others_being_served(todo_server: TodoServer, alice: User) -> None:
    channel = own_connection(todo_server.port)
    watch = health_pb2_grpc.HealthStub(channel).Watch
    # As many as one address may hold (4 x the test server's --max-workers); past it they are refused
    # (tests/test_tokenless_crowding.py).
    watches = [watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(PUBLIC_CALLS_PER_PEER)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        for _ in range(10):
            alice.stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=alice.metadata, timeout=2)
        assert time.monotonic() - started < 2
        assert not any(call.done() for call in watches)
    finally:
        for call in watches:
            call.cancel()
        channel.close()


def test_calls_past_the_concurrent_rpc_limit_are_refused_at_once(
    settings: Settings, alice: User, make_user: Callable[[str], User]
) -> None:
    limited = dataclasses.replace(settings, max_concurrent_rpcs=40)
    # Ten users, each within their own bound (server/call_limits.py), fill the server together.
    crowd = [make_user(f"crowd{n}").metadata for n in range(10)]
    with run_server(limited) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.TaskServiceStub(channel)

        def list_tasks() -> pb.ListTasksResponse:
            return stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=alice.metadata, timeout=5)

        with stalled_calls(server.port, limited.max_concurrent_rpcs, *crowd) as stalled:
            started = time.monotonic()
            failure = failure_of(list_tasks)
            assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 1
            assert not any(call.done() for call in stalled)
        # Served again once the stalled calls are gone (the server sees their cancellation a moment later).
        deadline = time.monotonic() + 5
        while (code := _failure_code(list_tasks)) is not None and time.monotonic() < deadline:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(0.05)
        assert code is None


def _failure_code(call: Callable[[], Any]) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return None
