"""SIGTERM under load: health says NOT_SERVING at once, in-flight calls finish, new ones are refused, exit 0."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import start_server
from tests.faults.load import WriteLoad, stored_writes
from tests.faults.report import FaultRow
from tests.support import mint_token

pytestmark = pytest.mark.e2e

# Long, so that a drain that ends with its calls (~2 s; more on a loaded machine) is far from one that
# waits out the grace period (the bug this test guards against).
_GRACE_SECONDS = 15.0


def _watch_health(address: str, seen: list[tuple[float, int]], ready: threading.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        try:
            for response in stream:
                seen.append((time.monotonic(), response.status))
                ready.set()
        except grpc.RpcError:
            return  # the server went away: the watch is over


def test_sigterm_drains_in_flight_calls_and_keeps_every_acknowledged_write(
    tmp_path: Path, load_seconds: float, fault_report: list[FaultRow]
) -> None:
    server = start_server(tmp_path, "--grace-seconds", str(_GRACE_SECONDS))
    database = tmp_path / "todo.db"
    health: list[tuple[float, int]] = []
    watching = threading.Event()
    threading.Thread(target=_watch_health, args=(server.address, health, watching), daemon=True).start()
    assert watching.wait(10)
    user = "drain-user"
    with WriteLoad(server.address, mint_token(server.secret.encode(), user), threads=4) as load:
        load.wait_for_acks(20)
        time.sleep(load_seconds)
        # Hold the write lock so that calls are surely in flight when SIGTERM lands, then let them finish.
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            time.sleep(0.3)
            sigterm_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        exit_code = server.process.wait(timeout=_GRACE_SECONDS + 10)
        exited_at = time.monotonic()
        time.sleep(0.3)
        result = load.stop()

    assert exit_code == 0, server.log()
    # The in-flight calls end about a second after SIGTERM (when the lock goes); the drain ends with them,
    # well inside the grace period, even with a health Watch open.
    assert exited_at - sigterm_at < _GRACE_SECONDS / 2
    not_serving = [at for at, status in health if status == health_pb2.HealthCheckResponse.NOT_SERVING]
    assert not_serving, f"health never said NOT_SERVING: {health}"
    assert not_serving[0] - sigterm_at < 0.5
    in_flight = [c for c in result.acknowledged if c.started < sigterm_at < c.ended]
    assert in_flight, "no call was in flight at SIGTERM: the drain was not exercised"
    # Calls begun once the handler had a moment to run: refused while draining, and after the exit.
    late = [c for c in result.calls if c.started > sigterm_at + 0.2]
    assert any(c.ended < exited_at for c in late), "no call was tried while the server drained"
    assert any(c.started > exited_at for c in late), "no call was tried after the server exited"
    assert {c.code for c in late} == {grpc.StatusCode.UNAVAILABLE}
    assert {c.code for c in result.calls} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    writes = stored_writes(f"sqlite:///{database}", user, result)
    assert writes.lost == []
    assert writes.mismatched == []
    assert writes.failed_but_stored == 0  # a refused call wrote nothing
    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    fault_report.append(
        FaultRow(
            fault="SIGTERM (graceful drain), SQLite",
            load=f"4 writer threads, {len(result.calls)} CreateTask",
            client_saw=f"{result.codes_text()}; {len(in_flight)} in flight at SIGTERM all OK; NOT_SERVING after "
            f"{(not_serving[0] - sigterm_at) * 1000:.0f} ms; exit {exit_code} after {exited_at - sigterm_at:.1f}s",
            acknowledged=writes.acknowledged,
            found=writes.found,
            recovery="n/a (stopped on purpose)",
        )
    )
