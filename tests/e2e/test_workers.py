"""`todo-server --workers N`: N processes share one port; a server without --workers cannot join them."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import BIN, run, start_server, stop_server


def _wait_for(predicate, seconds: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_two_workers_serve_one_port_and_drain_on_sigterm(tmp_path: Path):
    server = start_server(tmp_path, "--workers", "2")
    try:
        assert _wait_for(lambda: server.log().count(f"(port {server.port})") == 2), server.log()
        for _ in range(4):  # fresh connections, spread over the workers by the kernel
            with grpc.insecure_channel(server.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

        intruder = run(
            str(BIN / "todo-server"),
            *("--listen", server.address, "--database-url", f"sqlite:///{tmp_path / 'intruder.db'}"),
            env=server.env,
        )

        assert intruder.returncode == 2
        assert "cannot listen" in intruder.stderr
    finally:
        code = stop_server(server)
    assert code == 0
    assert server.log().count("stopped") == 2
