"""Test helpers: users who call the real server with real tokens, and readable error assertions."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import jwt
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.pool import PoolProxiedConnection


def wait_until(condition: Callable[[], object], seconds: float = 10.0) -> bool:
    """Polls `condition` until it is truthy or `seconds` pass; whether it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@contextmanager
def every_pooled_connection(engine: Engine) -> Iterator[list[PoolProxiedConnection]]:
    """Every connection `engine`'s pool holds, checked out at once (the server's calls' too), then given back."""
    held: list[PoolProxiedConnection] = []
    try:
        # One by one inside the try: a checkout that times out still gives back the ones before it.
        for _ in range(engine.pool.size()):
            held.append(engine.raw_connection())
        yield held
    finally:
        for connection in held:
            connection.close()


def mint_token(secret: bytes, sub: Any = "alice", *, ttl: int = 600, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    if sub is None:
        del body["sub"]
    return jwt.encode(body, secret, algorithm="HS256")


@dataclass
class RpcFailure:
    """What a failed call told the client: code, message and the google.rpc details it carried."""

    code: grpc.StatusCode
    message: str
    reason: str | None = None
    violations: dict[str, str] = field(default_factory=dict)


def failure_of(call: Callable[[], Any]) -> RpcFailure:
    """Runs `call`, which must fail, and returns how."""
    try:
        call()
    except grpc.RpcError as error:
        failure = RpcFailure(code=error.code(), message=error.details() or "")
        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                failure.reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                failure.violations = {v.field: v.description for v in bad.field_violations}
        return failure
    raise AssertionError("the call succeeded but was expected to fail")


class User:
    """A signed-in user of the todo app, calling the TaskService as the BFF would."""

    def __init__(self, user_id: str, token: str, stub: pb_grpc.TaskServiceStub) -> None:
        self.user_id = user_id
        self.token = token
        self.stub = stub
        self.metadata = (("authorization", f"Bearer {token}"),)

    def create_task(self, title: str = "a task", *, parent: str = "users/me", request_id: str = "", **fields: Any):
        request = pb.CreateTaskRequest(parent=parent, task=pb.Task(title=title, **fields), request_id=request_id)
        return self.stub.CreateTask(request, metadata=self.metadata, timeout=10).task

    def get_task(self, name: str) -> pb.Task:
        return self.stub.GetTask(pb.GetTaskRequest(name=name), metadata=self.metadata, timeout=10).task

    def list_tasks(self, parent: str = "users/me", **options: Any) -> pb.ListTasksResponse:
        request = pb.ListTasksRequest(parent=parent, **options)
        return self.stub.ListTasks(request, metadata=self.metadata, timeout=10)

    def all_tasks(self, **options: Any) -> list[pb.Task]:
        tasks: list[pb.Task] = []
        token = ""
        while True:
            page = self.list_tasks(page_token=token, **options)
            tasks.extend(page.tasks)
            token = page.next_page_token
            if not token:
                return tasks

    def update_task(self, task: pb.Task, paths: list[str] | None = None) -> pb.Task:
        request = pb.UpdateTaskRequest(task=task)
        request.update_mask.paths.extend(paths or [])
        return self.stub.UpdateTask(request, metadata=self.metadata, timeout=10).task

    def delete_task(self, name: str, etag: str = "") -> None:
        self.stub.DeleteTask(pb.DeleteTaskRequest(name=name, etag=etag), metadata=self.metadata, timeout=10)


def unused_port() -> int:
    """A 127.0.0.1 port nothing listens on now: for a server to bind, or a client to find nobody at."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
