"""SQLite on a full or read-only filesystem: clear UNAVAILABLE errors, no corruption, recovery without restart.

The database lives on a tiny tmpfs mounted for the test (we may run as root, where chmod stops no write);
where mounting is not allowed, the tests skip and say why.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer
from tests.faults.conftest import fault_server
from tests.faults.load import WriteLoad, stored_writes
from tests.faults.report import FaultRow
from tests.support import User, failure_of, mint_token

_SIZE = "2m"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", f"size={_SIZE}", "tmpfs", str(mount_point))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {_SIZE} tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], timeout=10, check=False)


@pytest.fixture
def secret() -> bytes:
    return secrets.token_urlsafe(48).encode()


@pytest.fixture
def server_on(tiny_filesystem: Path, secret: bytes) -> Iterator[TodoServer]:
    with fault_server(f"sqlite:///{tiny_filesystem / 'todo.db'}", secret) as server:
        yield server


def _user(server: TodoServer, secret: bytes, channel: grpc.Channel) -> User:
    user_id = f"disk{secrets.token_hex(4)}"
    return User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))


def _fill(directory: Path) -> Path:
    """Fills the filesystem with one file, leaving (almost) nothing free."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            for _ in range(100_000):  # bounded: the filesystem is far smaller than 400 MB
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as check:
        return check.execute("PRAGMA integrity_check").fetchone()[0]


def test_disk_full_gives_unavailable_keeps_acked_writes_and_recovers(
    tiny_filesystem: Path, server_on: TodoServer, secret: bytes, load_seconds: float, fault_report: list[FaultRow]
) -> None:
    database = tiny_filesystem / "todo.db"
    user_id = f"disk{secrets.token_hex(4)}"
    address = f"127.0.0.1:{server_on.port}"
    with WriteLoad(address, mint_token(secret, user_id), threads=2, deadline=8) as load:
        load.wait_for_acks(10)
        filler = _fill(tiny_filesystem)
        full_at = time.monotonic()
        deadline = full_at + 20
        while not any(c.code != grpc.StatusCode.OK and c.started > full_at for c in load.result.calls):
            assert time.monotonic() < deadline, f"writes never failed on a full disk: {load.result.codes()}"
            time.sleep(0.05)
        time.sleep(load_seconds)  # the disk stays full under load for a while
        filler.unlink()
        freed_at = time.monotonic()
        load.wait_for_acks(len(load.result.acknowledged) + 10)
        result = load.stop()

    during = [c for c in result.failed if c.started > full_at]
    assert {c.code for c in result.failed} == {grpc.StatusCode.UNAVAILABLE}
    assert max(c.ended - c.started for c in during) < 8
    writes = stored_writes(f"sqlite:///{database}", user_id, result)
    assert (writes.lost, writes.mismatched) == ([], [])
    assert _integrity(database) == "ok"
    recovery = result.recovery_seconds(freed_at)
    assert recovery is not None
    assert recovery < 5
    fault_report.append(
        FaultRow(
            fault="SQLite: disk full (2 MB tmpfs filled)",
            load=f"2 writer threads, {len(result.calls)} CreateTask",
            client_saw=f"{result.codes_text()}; slowest failure {result.slowest_failure():.2f}s; "
            f"integrity_check {_integrity(database)}",
            acknowledged=writes.acknowledged,
            found=writes.found,
            recovery=f"{recovery:.2f}s after space was freed, no restart",
        )
    )


def test_read_only_filesystem_gives_unavailable_for_writes_and_recovers(
    tiny_filesystem: Path, server_on: TodoServer, secret: bytes, fault_report: list[FaultRow]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server_on.port}") as channel:
        alice = _user(server_on, secret, channel)
        kept = alice.create_task("before read-only")
        # The kernel turns a failing filesystem read-only under open files; `mount` will not while files
        # are open for writing, so the idle pooled connections are closed first.
        server_on.database.engine.dispose()
        remounted = _mount("-o", "remount,ro", str(tiny_filesystem))
        assert remounted.returncode == 0, remounted.stderr
        try:
            started = time.monotonic()
            failure = failure_of(lambda: alice.create_task("while read-only"))
            waited = time.monotonic() - started
        finally:
            assert _mount("-o", "remount,rw", str(tiny_filesystem)).returncode == 0
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
        assert "readonly" not in failure.message
        assert "sqlite" not in failure.message
        assert waited < 6
        recovered_at = time.monotonic()
        assert alice.create_task("after read-only").title == "after read-only"
        recovery = time.monotonic() - recovered_at
        tasks = alice.all_tasks()
    titles = sorted(task.title for task in tasks)
    assert titles == ["after read-only", "before read-only"]
    assert kept.name in {task.name for task in tasks}
    assert _integrity(tiny_filesystem / "todo.db") == "ok"
    fault_report.append(
        FaultRow(
            fault="SQLite: filesystem remounted read-only",
            load="1 client, one write before, during and after",
            client_saw=f"{failure.code.name} ({failure.reason}) after {waited:.2f}s; integrity_check ok",
            acknowledged=2,
            found=len(titles),
            recovery=f"{recovery:.2f}s after remount rw, no restart",
        )
    )
