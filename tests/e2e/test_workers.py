"""`todo-server --workers N`: N processes share one port and one metrics endpoint; no outsider can join them."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import BIN, run, start_server, stop_server
from tests.support import failure_of, mint_token, wait_until


def test_two_workers_serve_one_port_and_drain_on_sigterm(tmp_path: Path):
    server = start_server(tmp_path, "--workers", "2")
    try:
        assert wait_until(lambda: server.log().count(f"(port {server.port})") == 2, 30), server.log()
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


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _started_per_worker(metrics_directory: Path) -> list[float]:
    """CreateTask starts counted by each worker, read from its own file of the shared directory."""
    counts = []
    for path in sorted(metrics_directory.glob("counter_*.db")):
        families = MultiProcessCollector.merge([str(path)])
        counts.append(
            sum(
                sample.value
                for family in families
                for sample in family.samples
                if sample.name == "grpc_server_started_total" and sample.labels["grpc_method"] == "CreateTask"
            )
        )
    return counts


def test_metrics_listen_serves_the_sum_of_all_workers(tmp_path: Path):
    server = start_server(
        tmp_path,
        *("--workers", "2", "--max-workers", "3", "--metrics-listen", "127.0.0.1:0"),
        env={"TMPDIR": str(tmp_path)},  # where the parent makes the workers' metrics directory
    )
    try:
        assert wait_until(lambda: server.log().count(f"(port {server.port})") == 2, 30), server.log()
        metrics_port = int(re.search(r"metrics of all 2 workers on \S+ \(port (\d+)\)", server.log()).group(1))
        token = mint_token(server.secret.encode(), "alice")
        calls, refused = 40, 6
        for n in range(calls + refused):
            # A channel of its own, so a connection of its own: the kernel spreads connections over workers.
            with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.TaskServiceStub(channel)
                request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=f"task {n}"))
                if n < calls:
                    stub.CreateTask(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
                else:
                    refusal = failure_of(lambda s=stub, r=request: s.CreateTask(r, timeout=10))
                    assert refusal.reason == "TOKEN_MISSING"

        (metrics_directory,) = tmp_path.glob("todo-metrics-*")
        per_worker = _started_per_worker(metrics_directory)
        assert len(per_worker) == 2
        assert all(count > 0 for count in per_worker), per_worker  # both workers served calls
        create = {"grpc_type": "unary", "grpc_service": "todo.v1.TaskService", "grpc_method": "CreateTask"}
        # Both workers' pools (3 + 1 connections each) are in the sum once each has sampled its pool.
        assert wait_until(lambda: _scrape(metrics_port).get(("todo_db_pool_size", frozenset())) == 8, 30)
        samples = _scrape(metrics_port)

        def value(name: str, **labels: str) -> float:
            return samples.get((name, frozenset(labels.items())), 0.0)

        assert sum(per_worker) == calls + refused
        assert value("grpc_server_started_total", **create) == calls + refused
        assert value("grpc_server_handled_total", **create, grpc_code="OK") == calls
        assert value("grpc_server_handled_total", **create, grpc_code="UNAUTHENTICATED") == refused
        assert value("grpc_server_msg_received_total", **create) == calls + refused
        assert value("grpc_server_msg_sent_total", **create) == calls
        assert value("grpc_server_handling_seconds_count", **create) == calls + refused
        assert value("todo_auth_failures_total", reason="TOKEN_MISSING") == refused
        assert value("todo_db_pool_connections", state="checked_out") == 0
    finally:
        code = stop_server(server)
    assert code == 0
    assert not list(tmp_path.glob("todo-metrics-*"))  # the parent removes the shared directory


def test_a_worker_stopped_the_moment_it_is_forked_still_stops_and_takes_the_others_with_it(tmp_path: Path):
    """SIGTERM in the instant between fork and the worker's own signal handlers must not be lost: the
    worker would then serve on, unstoppable but by SIGKILL, and the server with it."""
    env = {**os.environ, "BETTER_AUTH_SECRET": secrets.token_urlsafe(48), "TODO_MIGRATE": "1"}
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(BIN / "todo-server"), "--listen", "127.0.0.1:0", "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            forked = children.read_text().split() if children.exists() else []
            if forked:  # as early as we can see it: before it has set up anything
                os.kill(int(forked[0]), signal.SIGTERM)
                break
        else:
            raise AssertionError("no worker was forked")
        # The worker stops, and the parent stops the other: well before a worker's grace period ends.
        server.wait(timeout=15)
    finally:
        if server.poll() is None:
            for pid in children.read_text().split() if children.exists() else []:
                os.kill(int(pid), signal.SIGKILL)
            server.kill()
            server.wait()
    assert "a worker exited; stopping the others" in (tmp_path / "server.log").read_text()
