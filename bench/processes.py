"""Starting the servers under test as separate processes (optionally pinned to CPUs), and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def taskset_works() -> bool:
    try:
        return subprocess.run(["taskset", "-c", "0", "true"], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    children: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        """The server's process and, for --workers, the worker processes it forked."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        children = [int(pid) for pid in path.read_text().split()] if path.exists() else []
        return [self.process.pid, *children]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        ticks = 0
        for pid in self.pids():
            # Fields 14 and 15 of /proc/PID/stat, counted after the parenthesised command name.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    name: str,
    command: list[str],
    *,
    port: int,
    scratch: Path,
    cpus: str | None,
    env: dict[str, str] | None = None,
    ready_marker: str,
    ready_count: int = 1,
) -> ServerProcess:
    """Starts `command` and waits until its log shows `ready_marker` `ready_count` times."""
    log_path = scratch / f"{name}.log"
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=scratch
        )
    server = ServerProcess(name, process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log_path.read_text(errors="replace").count(ready_marker) >= ready_count and _accepts(port):
            return server
        if process.poll() is not None:
            break
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not start: {' '.join(command)}\n{log_path.read_text(errors='replace')}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
