"""What the benchmark ran on: it goes into the report, since numbers mean nothing without it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _h2load_version() -> str:
    completed = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False)
    return completed.stdout.strip() or "unknown"


def describe() -> dict[str, str]:
    load1, load5, _ = os.getloadavg()
    return {
        "CPU": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": f"{_memory_gib():.0f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "packages": ", ".join(
            f"{p} {_version(p)}"
            for p in ("grpcio", "protobuf", "SQLAlchemy", "PyJWT", "fastapi", "uvicorn", "psycopg")
        ),
        "load generator": _h2load_version(),
        "load average at start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
    }
