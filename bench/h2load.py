"""Driving h2load (nghttp2's C load generator) and reading its numbers, including per-request latencies."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

_FINISHED = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?, [\d.]+\w* \((\d+)\) data")


class LoadError(RuntimeError):
    """h2load did not run, or a target answered something other than success."""


@dataclass(frozen=True)
class Load:
    url: str
    concurrency: int
    seconds: float
    headers: tuple[str, ...] = ()
    body_file: Path | None = None  # POSTed when set (gRPC); GET otherwise
    http1: bool = False
    cpus: str | None = None  # taskset CPU list for h2load itself


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    done: int
    data_bytes_per_response: float


def h2load_path() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise LoadError("h2load is missing: apt-get install -y nghttp2-client (make bench does this)")
    return path


def _percentile(sorted_values: list[int], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] / 1000


def run_load(load: Load, *, warm_up_seconds: float = 1.0) -> Result:
    """Runs a warm-up, then one timed load. Raises LoadError unless every request got a 2xx answer."""
    if warm_up_seconds > 0:
        # A separate run: h2load 1.52's own --warm-up-time miscounts the DATA bytes that prove gRPC successes.
        _run_once(replace(load, seconds=warm_up_seconds))
    return _run_once(load)


def _run_once(load: Load) -> Result:
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        log_file = Path(scratch) / "requests.tsv"
        # -c clients x -m 1 stream each: `concurrency` requests in flight on HTTP/2 and HTTP/1.1 alike.
        command = [h2load_path(), "-c", str(load.concurrency), "-m", "1", "-t", "1"]
        command += ["-D", f"{load.seconds:g}", "--log-file", str(log_file)]
        for header in load.headers:
            command += ["-H", header]
        if load.body_file is not None:
            command += ["-d", str(load.body_file)]
        if load.http1:
            command.append("--h1")
        command.append(load.url)
        if load.cpus is not None:
            command = ["taskset", "-c", load.cpus, *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
        output = completed.stdout + completed.stderr
        finished, requests = _FINISHED.search(output), _REQUESTS.search(output)
        statuses, traffic = _STATUS.search(output), _TRAFFIC.search(output)
        if completed.returncode != 0 or not (finished and requests and statuses and traffic):
            raise LoadError(f"h2load failed ({completed.returncode}): {' '.join(command)}\n{output}")
        done, succeeded = int(requests.group(2)), int(requests.group(3))
        not_2xx = sum(int(statuses.group(n)) for n in (2, 3, 4))
        # Not "2xx == done": with --h1, a response that lands as the timed window closes is counted 2xx
        # but not done (7382 2xx for 7381 done, seen once).
        if done == 0 or succeeded != done or not_2xx:
            raise LoadError(f"not every request succeeded against {load.url}:\n{output}")
        latencies = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line)
    return Result(
        requests_per_second=float(finished.group(1)),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        done=done,
        data_bytes_per_response=int(traffic.group(1)) / done,
    )
