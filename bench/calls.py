"""The calls under load: their framed bodies for h2load, the data they read, and a check that they succeed."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from bench.grpc_frames import frame, unframe
from client.dev_tokens import mint_hs256_token

SERVICE = "todo.v1.TaskService"
LIST_PAGE = 50
READER, WRITER = "bench-reader", "bench-writer"


@dataclass(frozen=True)
class GrpcCall:
    """One RPC as h2load sends it: method path, headers, framed body on disk."""

    method: str
    body_file: Path
    token: str | None
    deadline_seconds: int | None = None  # sent as grpc-timeout, as a BFF with a deadline does

    @property
    def headers(self) -> tuple[str, ...]:
        headers: tuple[str, ...] = ("content-type: application/grpc", "te: trailers")
        if self.deadline_seconds is not None:
            headers += (f"grpc-timeout: {self.deadline_seconds}S",)
        return (*headers, f"authorization: Bearer {self.token}") if self.token else headers


def write_call(scratch: Path, name: str, method: str, request: object, token: str | None) -> GrpcCall:
    body_file = scratch / f"{name}.grpc"
    body_file.write_bytes(frame(request))  # type: ignore[arg-type]
    return GrpcCall(method=f"/{SERVICE}/{method}", body_file=body_file, token=token)


def call_once(port: int, call: GrpcCall) -> int:
    """Sends `call`'s exact body and headers once; its framed response size. Raises RpcError unless OK."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        send = channel.unary_unary(call.method)  # no serializers: the very bytes h2load will send
        metadata = (("authorization", f"Bearer {call.token}"),) if call.token else None
        response = send(unframe(call.body_file.read_bytes()), metadata=metadata, timeout=10)
    return len(response) + 5


@dataclass(frozen=True)
class Dataset:
    reader_token: str
    writer_token: str
    task_name: str  # one of the reader's tasks, for GetTask


def seed(port: int, secret: bytes, *, tasks: int = LIST_PAGE + 10) -> Dataset:
    """Gives the reader `tasks` tasks (a full ListTasks page and more) through the real server."""
    reader = mint_hs256_token(secret=secret, subject=READER, ttl_seconds=24 * 3600)
    writer = mint_hs256_token(secret=secret, subject=WRITER, ttl_seconds=24 * 3600)
    metadata = (("authorization", f"Bearer {reader}"),)
    names = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        for n in range(tasks):
            task = pb.Task(
                title=f"Benchmark task {n:03d}",
                description="A task the benchmark reads back.",
                priority=pb.PRIORITY_MEDIUM,
            )
            response = stub.CreateTask(pb.CreateTaskRequest(parent="users/me", task=task), metadata=metadata)
            names.append(response.task.name)
    return Dataset(reader_token=reader, writer_token=writer, task_name=names[0])


def grpc_calls(scratch: Path, data: Dataset) -> dict[str, GrpcCall]:
    return {
        "GetTask": write_call(
            scratch, "get", "GetTask", pb.GetTaskRequest(name=data.task_name), data.reader_token
        ),
        "ListTasks": write_call(
            scratch,
            "list",
            "ListTasks",
            pb.ListTasksRequest(parent="users/me", page_size=LIST_PAGE),
            data.reader_token,
        ),
        "CreateTask": write_call(
            scratch,
            "create",
            "CreateTask",
            pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="Written by the benchmark")),
            data.writer_token,
        ),
    }


def rest_get_once(port: int, task_id: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/users/me/tasks/{task_id}", headers={"authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (a local http:// URL)
        return json.loads(response.read())
