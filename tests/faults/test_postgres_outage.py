"""PostgreSQL goes away under load: calls fail fast with UNAVAILABLE, service comes back by itself, nothing
acknowledged is lost. The short run cuts connections to a scratch database of our own; `make soak` also
stops the whole PostgreSQL server (never `make test`: other suites share it)."""

from __future__ import annotations

import glob
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import ServerProcess, start_server, stop_server
from tests.faults.conftest import SOAK, ScratchDatabase
from tests.faults.load import LoadResult, WriteLoad, stored_writes
from tests.faults.report import FaultRow
from tests.support import mint_token

pytestmark = pytest.mark.e2e

_DEADLINE = 3.0


def _health(server: ServerProcess) -> str:
    with grpc.insecure_channel(server.address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _outage(
    tmp_path: Path,
    scratch: ScratchDatabase,
    load_seconds: float,
    outage_seconds: float,
    cut: Callable[[], None],
    restore: Callable[[], None],
) -> tuple[LoadResult, float, float, str, object]:
    # Readiness checks every 0.2 s, so health can be seen to follow the database within the outage.
    server = start_server(tmp_path, "--database-url", scratch.url, "--health-check-seconds", "0.2")
    user = "outage-user"
    try:
        with WriteLoad(server.address, mint_token(server.secret.encode(), user), deadline=_DEADLINE) as load:
            load.wait_for_acks(20)
            time.sleep(load_seconds)
            cut_at = time.monotonic()
            try:
                cut()
                time.sleep(outage_seconds)
                health_during = _health(server)
            finally:
                restore()
            restored_at = time.monotonic()
            load.wait_for_acks(len(load.result.acknowledged) + 20, timeout=30)
            time.sleep(max(load_seconds, 1.0))
            health_after = _health(server)
            result = load.stop()
        assert stop_server(server) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
    writes = stored_writes(scratch.url, user, result)
    assert (health_during, health_after) == ("NOT_SERVING", "SERVING")
    return result, cut_at, restored_at, health_during, writes


def _check(result: LoadResult, cut_at: float, restored_at: float, writes) -> float:  # type: ignore[no-untyped-def]
    during = [c for c in result.calls if cut_at + 0.2 < c.started < restored_at - 0.2]
    assert during, "no call was made while the database was away"
    assert {c.code for c in result.failed} <= {grpc.StatusCode.UNAVAILABLE}, result.codes()
    assert any(c.code == grpc.StatusCode.UNAVAILABLE for c in during)
    # Fail fast: well inside the caller's deadline, not a hang until it.
    assert result.slowest_failure() < _DEADLINE - 0.5, result.slowest_failure()
    assert (writes.lost, writes.mismatched) == ([], [])
    recovery = result.recovery_seconds(restored_at)
    assert recovery is not None
    assert recovery < 5
    return recovery


def test_cut_connections_give_unavailable_then_recover_with_no_acked_write_lost(
    tmp_path: Path, scratch_database: ScratchDatabase, load_seconds: float, fault_report: list[FaultRow]
) -> None:
    outage = 10.0 if SOAK else 1.5
    result, cut_at, restored_at, health, writes = _outage(
        tmp_path,
        scratch_database,
        load_seconds,
        outage,
        scratch_database.cut_connections,
        scratch_database.restore_connections,
    )
    recovery = _check(result, cut_at, restored_at, writes)
    fault_report.append(
        FaultRow(
            fault=f"PostgreSQL: connections cut for {outage:.0f}s "
            "(ALLOW_CONNECTIONS false + pg_terminate_backend)",
            load=f"4 writer threads, {len(result.calls)} CreateTask, deadline {_DEADLINE:.0f}s",
            client_saw=f"{result.codes_text()}; slowest failure {result.slowest_failure():.2f}s; "
            f"health during: {health}",
            acknowledged=writes.acknowledged,
            found=writes.found,
            recovery=f"{recovery:.2f}s after connections were allowed again",
        )
    )


def _pg_ctl(action: str) -> None:
    """Stops or starts the local cluster: `TODO_SOAK_PG_CLUSTER` ("15 main") or the first version's main."""
    cluster = os.environ.get("TODO_SOAK_PG_CLUSTER", "").split()
    if not cluster:
        versions = sorted(Path(p).name for p in glob.glob("/etc/postgresql/*"))
        assert versions, "no local PostgreSQL cluster to stop"
        cluster = [versions[0], "main"]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action]
    subprocess.run(command, check=True, timeout=60, capture_output=True)


@pytest.mark.soak
def test_stopped_postgresql_server_gives_unavailable_then_recovers(
    tmp_path: Path, scratch_database: ScratchDatabase, load_seconds: float, fault_report: list[FaultRow]
) -> None:
    outage = 10.0
    result, cut_at, restored_at, health, writes = _outage(
        tmp_path, scratch_database, load_seconds, outage, lambda: _pg_ctl("stop"), lambda: _pg_ctl("start")
    )
    recovery = _check(result, cut_at, restored_at, writes)
    fault_report.append(
        FaultRow(
            fault=f"PostgreSQL: server stopped for {outage:.0f}s (pg_ctlcluster stop, then start)",
            load=f"4 writer threads, {len(result.calls)} CreateTask, deadline {_DEADLINE:.0f}s",
            client_saw=f"{result.codes_text()}; slowest failure {result.slowest_failure():.2f}s; "
            f"health during: {health}",
            acknowledged=writes.acknowledged,
            found=writes.found,
            recovery=f"{recovery:.2f}s after the server was started",
        )
    )
