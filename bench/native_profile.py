"""Sampling every thread of a server process with Linux perf: where its CPU goes by native library.

py-spy (bench/profile.py) sees Python frames on the thread holding the GIL. A call also costs the server
time it cannot see: in the kernel (network syscalls, waking and switching threads), in gRPC core's C, in
SQLite with the GIL released. perf's cpu-clock is a software event, so it samples in a VM without hardware
counters too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# What a sample's shared object is part of; the first pattern that matches names it.
PARTS: tuple[tuple[str, str], ...] = (
    ("kernel: syscalls, waking and switching threads", r"^\[kernel"),
    ("Python interpreter: every Python line, ours, grpcio's and SQLAlchemy's", r"^(libpython|python3)"),
    ("gRPC core (C)", r"^cygrpc"),
    ("SQLite (C)", r"sqlite3"),
    ("protobuf (upb, C)", r"^_message"),
    ("libc: malloc, locks, clocks", r"^(libc\.|libm\.|ld-linux|libstdc\+\+|\[vdso\])"),
    ("OpenSSL: a token's HMAC", r"^(libcrypto|_hashlib)"),
)
OTHER = "other"
SAMPLES_PER_SECOND = 999
# A row of `perf report --stdio -n`: share, sample count, then the sort key.
_ROW = re.compile(r"^\s*(?P<share>[\d.]+)%\s+(?P<samples>\d+)\s+(?P<key>.+?)\s*$")


@dataclass(frozen=True)
class NativeProfile:
    samples: int
    by_part: dict[str, float]  # part -> share of all samples
    kernel_functions: list[tuple[str, float]]  # the kernel's busiest functions, share of all samples


def unavailable_reason() -> str | None:
    """Why perf cannot sample here (not installed, not allowed), or None when it can."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (apt-get install linux-perf; make bench tries)"
    with tempfile.TemporaryDirectory(prefix="perf-check-") as scratch:
        command = [perf, "record", "-q", "-e", "cpu-clock", "-o", f"{scratch}/check.data", "--", "true"]
        checked = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if checked.returncode != 0:
        last_line = (checked.stderr.strip().splitlines() or ["no output"])[-1]
        return f"perf cannot sample here: {last_line}"
    return None


def record(pids: list[int], seconds: float, out: Path) -> Path:
    """Samples every thread of `pids` for `seconds` into `out` (perf.data)."""
    command = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLES_PER_SECOND), "-o", str(out)]
    command += ["-p", ",".join(map(str, pids)), "--", "sleep", f"{seconds:g}"]
    subprocess.run(command, capture_output=True, check=True, timeout=seconds + 60)
    return out


def _report(data: Path, sort: str) -> list[tuple[str, int]]:
    command = ["perf", "report", "-i", str(data), "--sort", sort, "--stdio", "-n"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    rows = (_ROW.match(line) for line in output.splitlines() if not line.startswith("#"))
    return [(row["key"], int(row["samples"])) for row in rows if row is not None]


def part_of(shared_object: str) -> str:
    return next((part for part, pattern in PARTS if re.search(pattern, shared_object)), OTHER)


def summarize(data: Path, *, top: int = 6) -> NativeProfile:
    by_object = _report(data, "dso")
    samples = sum(count for _, count in by_object)
    if samples == 0:
        raise RuntimeError(f"perf recorded no samples in {data}")
    by_part = dict.fromkeys([part for part, _ in PARTS] + [OTHER], 0.0)
    for shared_object, count in by_object:
        by_part[part_of(shared_object)] += count / samples
    kernel = [(name[4:], count / samples) for name, count in _report(data, "sym") if name.startswith("[k] ")]
    return NativeProfile(samples=samples, by_part=by_part, kernel_functions=kernel[:top])
