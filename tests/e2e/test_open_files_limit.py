"""todo-server raises its soft limit on open files to the hard one: a common soft limit of 1024 let 1,020 idle
connections, without any credentials, stop it accepting clients (grpc core: "File descriptor limit reached")."""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import start_server, stop_server
from tests.support import mint_token

SOFT_LIMIT = 256


@contextlib.contextmanager
def soft_open_files_limit(soft: int) -> Iterator[None]:
    """This process's soft limit lowered to `soft` while the block runs (a child started then inherits it)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def test_idle_connections_past_a_low_soft_limit_leave_the_server_accepting_clients(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * SOFT_LIMIT:
        pytest.skip(f"the hard limit on open files here ({hard}) leaves no room above a soft one")
    with soft_open_files_limit(SOFT_LIMIT):
        server = start_server(tmp_path)
    idle: list[socket.socket] = []
    try:
        for _ in range(SOFT_LIMIT + 50):  # TCP connections that never speak HTTP/2
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        token = mint_token(server.secret.encode(), "alice")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            stub.ListTasks(
                pb.ListTasksRequest(parent="users/me"), metadata=[("authorization", f"Bearer {token}")], timeout=5
            )
    finally:
        for connection in idle:
            connection.close()
        stop_server(server)
