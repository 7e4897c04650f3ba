"""--drain-delay-seconds: after SIGTERM, health says NOT_SERVING at once, but new calls (on new connections
too) are still served for the delay, while load balancers move away; then the usual drain."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import ServerProcess, start_server
from tests.support import mint_token, wait_until

pytestmark = pytest.mark.e2e

_DELAY_SECONDS = 3.0


def _health(server: ServerProcess) -> int:
    with grpc.insecure_channel(server.address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _create_on_a_new_connection(server: ServerProcess, title: str) -> pb.Task:
    metadata = (("authorization", f"Bearer {mint_token(server.secret.encode(), 'alice')}"),)
    with grpc.insecure_channel(server.address) as channel:
        request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=title))
        return pb_grpc.TaskServiceStub(channel).CreateTask(request, metadata=metadata, timeout=5).task


def test_calls_are_served_during_the_drain_delay_while_health_says_not_serving(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--drain-delay-seconds", str(_DELAY_SECONDS))
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING
    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING, seconds=2)
    assert _create_on_a_new_connection(server, "during the delay").title == "during the delay"
    assert time.monotonic() - sigterm_at < _DELAY_SECONDS, "the call must land inside the delay to prove it"
    assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - sigterm_at >= _DELAY_SECONDS
    assert f"taking calls for {_DELAY_SECONDS:g}s more" in server.log()
