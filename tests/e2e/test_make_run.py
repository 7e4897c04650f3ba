"""The README's first command: `make run` serves on SQLite with no set-up, where its banner says it does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import unused_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def test_make_run_serves_where_its_banner_says_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # A directory of its own (make run writes .env and todo.db where it runs), with the venv running this test.
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port = unused_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TODO_") and k != "BETTER_AUTH_SECRET"}
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
        cwd=tmp_path,
        env={**env, "TODO_LISTEN": f"127.0.0.1:{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C goes to the whole foreground group: make and the server
    )
    try:
        deadline = time.monotonic() + 30
        while not _serving(f"127.0.0.1:{port}"):
            assert make.poll() is None, make.communicate()[0]
            assert time.monotonic() < deadline, "make run did not serve within 30 s"
            time.sleep(0.2)
        assert (tmp_path / ".env").read_text().startswith("BETTER_AUTH_SECRET=")
        assert (tmp_path / ".env").stat().st_mode & 0o077 == 0  # the secret mints anyone's token
        assert (tmp_path / "todo.db").exists()
    finally:
        os.killpg(make.pid, signal.SIGINT)
        output, _ = make.communicate(timeout=30)
    assert make.returncode in (0, -signal.SIGINT), output  # make dies of the Ctrl-C it was sent, as in a terminal
    assert f"listening on 127.0.0.1:{port}" in output
    assert f"grpcurl -plaintext localhost:{port} list" in output
    assert f"TODO_TARGET=localhost:{port}" in output
    assert "stopped" in output
    assert "Traceback" not in output
