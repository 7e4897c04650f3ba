"""Two replicas on one PostgreSQL database behind the client's own channel config (client/channel.py: round
robin, retry on UNAVAILABLE, throttled): kill -9 one under load, and the client keeps succeeding through the
other (the retry policy moves the calls that were on the dead one)."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from client.channel import CHANNEL_OPTIONS
from tests.e2e.conftest import start_server, stop_server
from tests.faults.conftest import ScratchDatabase
from tests.faults.load import WriteLoad, stored_writes
from tests.faults.report import FaultRow
from tests.support import mint_token

pytestmark = pytest.mark.e2e


def _duplicate_request_ids(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            duplicates = text(
                "SELECT count(*) FROM (SELECT request_id FROM tasks GROUP BY request_id HAVING count(*) > 1) d"
            )
            return connection.execute(duplicates).scalar_one()
    finally:
        engine.dispose()


def test_killing_one_replica_mid_load_loses_no_call_and_no_acked_write(
    tmp_path: Path, scratch_database: ScratchDatabase, load_seconds: float, fault_report: list[FaultRow]
) -> None:
    shared = {"BETTER_AUTH_SECRET": secrets.token_urlsafe(48)}  # both replicas verify the same tokens
    survivor = start_server(tmp_path, "--database-url", scratch_database.url, env=shared)
    victim = start_server(tmp_path, "--database-url", scratch_database.url, env=shared)
    target = f"ipv4:{survivor.address},{victim.address}"
    user = "replica-user"
    try:
        token = mint_token(shared["BETTER_AUTH_SECRET"].encode(), user)
        with WriteLoad(target, token, channel_options=list(CHANNEL_OPTIONS)) as load:
            load.wait_for_acks(40)
            time.sleep(load_seconds)
            killed_at = time.monotonic()
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            load.wait_for_acks(len(load.result.acknowledged) + 40)
            time.sleep(load_seconds)
            result = load.stop()
        assert stop_server(survivor) == 0
    finally:
        for server in (survivor, victim):
            if server.process.poll() is None:
                server.process.kill()

    after = [c for c in result.calls if c.started > killed_at]
    assert after
    assert result.failed == [], result.codes()  # the retry policy carried every call to the survivor
    writes = stored_writes(scratch_database.url, user, result)
    assert (writes.lost, writes.mismatched) == ([], [])
    assert _duplicate_request_ids(scratch_database.url) == 0  # a retried write was not stored twice
    assert "rpc method=/todo.v1.TaskService/CreateTask code=OK" in victim.log()  # both replicas served
    fault_report.append(
        FaultRow(
            fault="Replica loss: kill -9 one of two todo-servers (round_robin + retry on UNAVAILABLE), PostgreSQL",
            load=f"4 writer threads, {len(result.calls)} CreateTask",
            client_saw=f"{result.codes_text()}; {len(after)} calls after the kill",
            acknowledged=writes.acknowledged,
            found=writes.found,
            recovery="none needed: no call failed",
        )
    )
