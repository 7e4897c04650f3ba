"""Sampling a running server with py-spy and saying where its time goes, by layer and by function."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Which layer a frame belongs to, by the file it runs in; the first match from the innermost frame wins.
LAYERS: tuple[tuple[str, str], ...] = (
    ("token verification (server/auth, PyJWT)", r"server/auth/|\bjwt/"),
    ("access log (logging)", r"server/access_log\.py|\blogging/"),
    ("SQLAlchemy + driver", r"\b(sqlalchemy|sqlite3|psycopg)/"),
    ("repository (server/db)", r"server/db/"),
    ("proto <-> domain (server/services)", r"server/services/|server/tasks\.py|\bgoogle/protobuf/"),
    ("interceptors (server/status, rpc_handlers)", r"server/status\.py|server/rpc_handlers\.py|server/identity"),
    ("grpcio (Python part of the server loop)", r"\bgrpc/"),
    ("thread pool (concurrent.futures, threading)", r"\b(concurrent/futures|threading)"),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:]*):\d+\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    by_layer: list[tuple[str, float]]  # (layer, share of samples whose innermost known frame is in it)
    by_self: list[tuple[str, float]]  # (function, share of samples it was running)
    by_total: list[tuple[str, float]]  # (function, share of samples it was on the stack)


def py_spy_path() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path) -> Path:
    """Samples the thread of `pid` that holds the GIL (where its CPU goes) into collapsed stacks at `out`."""
    py_spy = py_spy_path()
    if py_spy is None:
        raise RuntimeError("py-spy is missing: pip install -e '.[bench]'")
    command = [py_spy, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}", "--rate", "200"]
    command += ["--gil", "--format", "raw", "--output", str(out), "--nonblocking"]
    subprocess.run(command, capture_output=True, check=True, timeout=seconds + 60)
    return out


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/issue-8/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path.split('/work/')[-1]})"


def summarize(collapsed: Path, *, top: int = 12) -> Profile:
    layers: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        self_time[_short(frames[-1])] += count
        for name in {_short(frame) for frame in frames}:
            total_time[name] += count
        layer = next(
            (name for frame in reversed(frames) for name, pattern in LAYERS if re.search(pattern, frame)),
            "other",
        )
        layers[layer] += count
    share = (lambda n: n / samples) if samples else (lambda n: 0.0)
    return Profile(
        samples=samples,
        by_layer=[(name, share(n)) for name, n in layers.most_common()],
        by_self=[(name, share(n)) for name, n in self_time.most_common(top)],
        by_total=[(name, share(n)) for name, n in total_time.most_common(top * 2)],
    )
