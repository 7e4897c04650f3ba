"""todo-server stops on SIGTERM or SIGINT whichever of its threads the kernel hands the signal to.

Python runs signal handlers on the main thread, between bytecodes. A process-wide signal may be delivered to
any thread that does not block it (gRPC's, the log writer's); the main thread, blocked in a bare wait(), then
never ran the handler: `make run` once ignored a Ctrl-C, and a SIGTERM would have left a pod serving on."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import start_server, stop_server

pytestmark = pytest.mark.e2e

_TGKILL = {"x86_64": 234, "aarch64": 131}  # tgkill(2): a signal to one thread of another process


def _signal_one_thread(pid: int, tid: int, signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_TGKILL[platform.machine()], pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


@pytest.mark.skipif(
    platform.machine() not in _TGKILL, reason="tgkill's syscall number is known here for x86_64, aarch64"
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_taken_by_a_worker_thread_still_stops_the_server(tmp_path: Path, signum: int) -> None:
    server = start_server(tmp_path)
    try:
        pid = server.process.pid
        others = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
        assert others, "todo-server runs threads besides its main one"
        _signal_one_thread(pid, others[-1], signum)
        assert server.process.wait(timeout=15) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("todo-server ignored a stop signal that one of its threads other than the main one took")
    finally:
        stop_server(server)
    assert "stopped" in server.log()
