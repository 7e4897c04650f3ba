"""The benchmark's report: the table, the ratios against the targets, RSS, the profile. Markdown."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.h2load import Result
from bench.native_profile import SAMPLES_PER_SECOND, NativeProfile
from bench.profile import Profile

if TYPE_CHECKING:
    from bench.__main__ import Options, Target

MIB = 1024 * 1024


@dataclass(frozen=True)
class RssRun:
    seconds: float
    samples: list[tuple[float, int]]  # (seconds since start, RSS bytes)
    result: Result


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: str
    denominator: str
    goal: float | None


RATIOS = (
    Ratio("b/a: authenticated GetTask (SQLite) / bare grpcio", "get", "bare", 0.75),
    Ratio("b/d: GetTask (SQLite) / FastAPI + uvicorn", "get", "fastapi", 2.0),
    Ratio("b0/a: todo-server GetTask, data layer from memory / bare grpcio", "get-floor", "bare", None),
    Ratio(
        "b0/d0: todo-server / FastAPI, both with the data layer from memory", "get-floor", "fastapi-floor", None
    ),
    Ratio("grpc.aio / grpcio sync (bare handlers)", "aio", "bare", None),
    Ratio("GetTask with the access log / without (cost of one INFO line per call)", "get", "quiet", None),
    Ratio("--workers 2 / 1 worker (GetTask SQLite, unpinned)", "w2", "w1", 1.6),
    Ratio("c/b: GetTask PostgreSQL / SQLite", "pg-get", "get", None),
    Ratio("GetTask SQLite with a deadline / without", "get-deadline", "get", None),
    Ratio("GetTask PostgreSQL with a deadline / without", "pg-get-deadline", "pg-get", None),
)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rps(target: Target, concurrency: int) -> list[float]:
    return [r.requests_per_second for r in target.results.get(concurrency, [])]


def _table(targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    lines = [
        "| target | concurrency | req/s (median) | req/s each round | p50 ms | p99 ms | server CPU us/call "
        "| bytes/response |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        for concurrency in levels:
            results = target.results.get(concurrency, [])
            if not results:
                continue
            rounds = ", ".join(f"{r.requests_per_second:.0f}" for r in results)
            lines.append(
                f"| {target.label} | {concurrency} | {_median(_rps(target, concurrency)):.0f} | {rounds} | "
                f"{_median([r.p50_ms for r in results]):.2f} | {_median([r.p99_ms for r in results]):.2f} | "
                f"{_median(target.cpu_us_per_call.get(concurrency, [])):.0f} | "
                f"{results[0].data_bytes_per_response:.0f} |"
            )
    return lines


def _ratios(targets: list[Target], levels: tuple[int, ...]) -> tuple[list[str], list[str]]:
    by_key = {t.key: t for t in targets}
    lines = [
        "| ratio | concurrency | median ratio | per-round ratios | goal | met |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    verdicts = []
    for ratio in RATIOS:
        top, bottom = by_key.get(ratio.numerator), by_key.get(ratio.denominator)
        if top is None or bottom is None:
            continue
        for concurrency in levels:
            tops, bottoms = _rps(top, concurrency), _rps(bottom, concurrency)
            if not tops or not bottoms:
                continue
            median = _median(tops) / _median(bottoms)
            per_round = ", ".join(f"{t / b:.2f}" for t, b in zip(tops, bottoms, strict=False))
            goal = "" if ratio.goal is None else f">= {ratio.goal:g}"
            met = "" if ratio.goal is None else ("yes" if median >= ratio.goal else "**no**")
            lines.append(f"| {ratio.label} | {concurrency} | {median:.2f} | {per_round} | {goal} | {met} |")
            if ratio.goal is not None:
                verdicts.append(
                    f"{ratio.label} at c={concurrency}: {median:.2f} "
                    f"({'met' if median >= ratio.goal else 'MISSED'})"
                )
    return lines, verdicts


def _cpu_ratios(targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    """The same ratios from server CPU per call (bottom's cost / top's): how much work a call is, which
    other load on the machine barely moves, unlike req/s. A ratio above 1 means the top target is cheaper."""
    by_key = {t.key: t for t in targets}
    lines = [
        "| ratio, by server CPU per call | concurrency | median ratio | per-round ratios |",
        "| --- | ---: | ---: | --- |",
    ]
    for ratio in RATIOS:
        top, bottom = by_key.get(ratio.numerator), by_key.get(ratio.denominator)
        if top is None or bottom is None or ratio.numerator.startswith("w"):
            continue  # workers add CPU on purpose: their ratio is only meaningful in req/s
        for concurrency in levels:
            tops, bottoms = top.cpu_us_per_call.get(concurrency, []), bottom.cpu_us_per_call.get(concurrency, [])
            if not tops or not bottoms:
                continue
            per_round = ", ".join(f"{b / t:.2f}" for t, b in zip(tops, bottoms, strict=False))
            lines.append(
                f"| {ratio.label} | {concurrency} | {_median(bottoms) / _median(tops):.2f} | {per_round} |"
            )
    return lines


# Each part of a GetTask: (label, target, target to subtract or None).
_PARTS: tuple[tuple[str, str, str | None], ...] = (
    ("grpcio's own server with a constant handler (a)", "bare", None),
    (
        "todo-server around the data layer: threads, auth, metrics, access log, errors, deadline, "
        "decoding, servicer (b0 - a)",
        "get-floor",
        "bare",
    ),
    ("todo-server's data layer: pooled connection, SQLite read, record (b - b0)", "get", "get-floor"),
    ("**todo-server GetTask (b)**", "get", None),
    ("FastAPI + uvicorn around the data layer: HTTP, routing, PyJWT, threadpool (d0)", "fastapi-floor", None),
    ("FastAPI's data layer: the same TaskRepository (d - d0)", "fastapi", "fastapi-floor"),
    ("**FastAPI GetTask (d)**", "fastapi", None),
)


def _cpu(targets: dict[str, Target], key: str, concurrency: int) -> float | None:
    target = targets.get(key)
    values = target.cpu_us_per_call.get(concurrency, []) if target is not None else []
    return _median(values) if values else None


def _subtraction(targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    """Each part of a GetTask's cost, from the targets that differ by that part alone (server CPU per call)."""
    by_key = {t.key: t for t in targets}
    needed = {"bare", "get", "get-floor", "fastapi", "fastapi-floor"}
    if not needed <= by_key.keys():
        return [f"(skipped: needs the targets {', '.join(sorted(needed))})"]
    lines = [
        "Server CPU per call (median of the rounds), each part the difference between two targets that differ "
        "by that part alone. b0 and d0 are the same two servers with TaskRepository.get answered from memory "
        "(bench/floors.py): both stacks cut at the same place.",
        "",
        f"| part | {' | '.join(f'us/call at c={c}' for c in levels)} |",
        f"| --- |{' ---: |' * len(levels)}",
    ]
    for label, key, minus in _PARTS:
        cells = []
        for concurrency in levels:
            value, subtrahend = _cpu(by_key, key, concurrency), _cpu(by_key, minus, concurrency) if minus else 0.0
            cells.append("" if value is None or subtrahend is None else f"{value - subtrahend:.0f}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines.append("")
    for concurrency in levels:
        a, b0 = _cpu(by_key, "bare", concurrency), _cpu(by_key, "get-floor", concurrency)
        d0 = _cpu(by_key, "fastapi-floor", concurrency)
        if a is None or b0 is None or d0 is None:
            continue
        lines.append(
            f"- At c={concurrency}: with a database that cost nothing, GetTask would reach a/b0 = "
            f"{a / b0:.2f} x the bare server (goal 0.75) and d0/b0 = {d0 / b0:.2f} x FastAPI (goal 2). "
            "Any data layer lowers both: the same repository adds the same work to b and to d, so b/d stays "
            "below d0/b0, and 2 x FastAPI needs todo-server around its data layer to cost half of FastAPI's."
        )
    return lines


def _rss(rss: RssRun | None) -> list[str]:
    if rss is None:
        return ["(skipped: BENCH_RSS_SECONDS=0 or no GetTask target)"]
    values = [b for _, b in rss.samples]
    settled = [b for t, b in rss.samples if t >= min(10.0, rss.seconds / 3)] or values
    growth = settled[-1] - settled[0]
    flat = abs(growth) <= max(2 * MIB, 0.03 * settled[0])
    every_ten = [f"{t:.0f}s {b / MIB:.1f}" for t, b in rss.samples if round(t) % 10 == 0]
    return [
        f"GetTask on SQLite for {rss.seconds:g} s, {rss.result.requests_per_second:.0f} req/s, "
        f"{rss.result.done} calls. RSS (MiB) at: {', '.join(every_ten)}.",
        "",
        f"Start {values[0] / MIB:.1f} MiB, after warm-up {settled[0] / MIB:.1f} MiB, "
        f"end {settled[-1] / MIB:.1f} MiB, "
        f"max {max(values) / MIB:.1f} MiB: growth after warm-up {growth / MIB:+.1f} MiB "
        f"-> **{'flat' if flat else 'GROWING'}** (flat = within 2 MiB or 3%).",
    ]


def _per_call(profile: Profile, targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    get = next((t for t in targets if t.key == "get"), None)
    rps = _median(_rps(get, max(levels))) if get is not None else float("nan")
    if not rps > 0:
        return []
    per_call = 1e6 / rps  # the server has one core: its time per call at full load
    split = "; ".join(f"{name} ~{share * per_call:.0f} us" for name, share in profile.by_layer[:5])
    return [
        f"At {rps:.0f} req/s on its one core, a GetTask costs the server at most ~{per_call:.0f} us "
        "(less if others used the core). "
        f"Split by the profile below: {split}.",
        "",
    ]


def _profile(profile: Profile | None, targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    if profile is None:
        return ["(skipped: BENCH_PROFILE_SECONDS=0, or no GetTask target)"]
    return [
        *_per_call(profile, targets, levels),
        f"py-spy, {profile.samples} samples of the todo-server process, only of the thread holding the GIL "
        "(where the CPU goes), "
        "under the GetTask load at the highest concurrency.",
        "",
        "Where the time goes, by layer (a sample counts for the innermost frame's layer):",
        "",
        "| layer | share |",
        "| --- | ---: |",
        *(f"| {name} | {share:.0%} |" for name, share in profile.by_layer),
        "",
        "Functions on the stack most often (inclusive):",
        "",
        "```",
        *(f"{share:6.1%}  {name}" for name, share in profile.by_total),
        "```",
        "",
        "Functions running most often (self):",
        "",
        "```",
        *(f"{share:6.1%}  {name}" for name, share in profile.by_self),
        "```",
    ]


_NATIVE_COLUMNS = {"bare": "a. bare grpcio", "get-floor": "b0. data layer from memory", "get": "b. GetTask"}


def _native(native: dict[str, NativeProfile] | str, targets: list[Target], levels: tuple[int, ...]) -> list[str]:
    """Each profiled target's CPU per call split by native library: shares of perf samples x measured CPU."""
    if isinstance(native, str):
        return [f"(skipped: {native})"]
    by_key = {t.key: t for t in targets}
    measured = {key: _cpu(by_key, key, max(levels)) for key in _NATIVE_COLUMNS if key in native}
    per_call = {key: us for key, us in measured.items() if us is not None}
    if not per_call:
        return ["(skipped: no server CPU per call was measured for the profiled targets)"]

    def us(key: str, part: str) -> float:
        return native[key].by_part[part] * per_call[key]

    every_part = native[next(iter(per_call))].by_part
    parts = [part for part in every_part if any(native[key].by_part[part] >= 0.005 for key in per_call)]
    lines = [
        f"perf (cpu-clock, every thread of the server process, {SAMPLES_PER_SECOND} samples/s) under the "
        f"highest concurrency's load: server CPU us/call (median of the rounds at c={max(levels)}), split by "
        "the share of samples in each native library. py-spy above sees only the interpreter's Python part.",
        "",
        "| part | " + " | ".join(_NATIVE_COLUMNS[key] for key in per_call) + " |",
        "| --- |" + " ---: |" * len(per_call),
        *(
            f"| {part} | "
            + " | ".join(f"{us(key, part):.0f} ({native[key].by_part[part]:.0%})" for key in per_call)
            + " |"
            for part in parts
        ),
        "| **all** | " + " | ".join(f"{per_call[key]:.0f}" for key in per_call) + " |",
    ]
    if {"get", "bare"} <= per_call.keys():
        extra = sorted(((us("get", part) - us("bare", part), part) for part in parts), reverse=True)
        lines += [
            "",
            f"A GetTask costs the server {per_call['get'] - per_call['bare']:.0f} us more than the bare server's "
            "constant answer, most of it in: "
            + "; ".join(f"{part} +{more:.0f} us" for more, part in extra[:3])
            + ".",
        ]
    if "get" in per_call:
        lines += [
            "",
            "The kernel's busiest functions under GetTask (share of all samples): "
            + ", ".join(f"{name} {share:.1%}" for name, share in native["get"].kernel_functions)
            + ".",
        ]
    return lines


def render(
    *,
    command: str,
    options: Options,
    facts: dict[str, str],
    pinned: bool,
    targets: list[Target],
    rss: RssRun | None,
    profile: Profile | None,
    native: dict[str, NativeProfile] | str,
    notes: list[str],
    seconds_taken: float,
    **_: Any,
) -> str:
    levels = options.concurrency
    ratio_lines, verdicts = _ratios(targets, levels)
    placement = (
        "Each server is pinned to CPU 0 and h2load to CPU 1 with `taskset`, except the `w.` rows, where "
        "the server gets both cores (two workers need them) and h2load shares them."
        if pinned
        else "`taskset` did not work here (or there is one CPU): servers and h2load float over all CPUs."
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/): do not edit by hand; rerun it.",
        "",
        f"Command: `{command}` ({options.rounds} rounds x {options.seconds:g} s per measurement, "
        f"concurrency {', '.join(map(str, levels))}; the run took {seconds_taken / 60:.1f} min).",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in facts.items()),
        "- Server and load generator share this machine, which other people were using at the same time: "
        "absolute numbers are noisy. Compare the ratios: the targets run alternately, round after round, "
        "in one run, so drift hits them all alike.",
        f"- {placement}",
        "",
        "## How it was measured",
        "",
        "One C load generator for every target: h2load (HTTP/2; `--h1` for the FastAPI app), `-c N -m 1` "
        "(N requests in flight on N connections), a 1 s warm-up, then the timed window; p50/p99 from h2load's "
        "per-request log. gRPC bodies are length-prefixed protobuf sent with `content-type: application/grpc` "
        "and `te: trailers`. h2load counts a gRPC error as HTTP 200, so before loading each target gets the "
        "very same bytes once from a Python channel (which must answer OK), and during the load the mean "
        "DATA bytes per response must equal that OK answer's size (an error carries no message).",
        "",
        "Targets: (a) a bare grpcio server, same 16-thread pool, GetTask returns a constant task of the same "
        "size, no interceptor, no database; (a') the same handler on grpc.aio; (b) todo-server (default "
        "settings: each call in flight on a thread of its own, 16 of them running our code at once, at most 4 "
        "of one user's (h2load sends one user's token), access "
        "log at INFO, auth, error mapping, caller-scoped SQLAlchemy) with a valid token on "
        "SQLite: GetTask, ListTasks (a page of 50), CreateTask (each run as a new user, who keeps under the "
        "10,000 tasks one user may), and GetTask again with a deadline "
        "(`grpc-timeout: 10S`, as a BFF sets one: the data layer then bounds its waits by it); (c) the same "
        "on PostgreSQL (a scratch database); (d) FastAPI + uvicorn (uvloop, httptools, access log off) "
        "doing GetTask's work: PyJWT HS256 check and the same TaskRepository lookup; (b0) and (d0) the same "
        "two servers with that lookup answered from memory, to split a call's cost (bench/floors.py).",
        "",
        *(f"Note: {note}" for note in notes),
        "",
        "## Results",
        "",
        *_table(targets, levels),
        "",
        "## Ratios",
        "",
        *ratio_lines,
        "",
        *(f"- {verdict}" for verdict in verdicts),
        "",
        "The goals are judged on req/s, as the issue states them. The same ratios from the server's CPU time "
        "per call (read from /proc before and after each timed window) show what a call costs the server "
        "itself, which other work on a shared machine barely moves:",
        "",
        *_cpu_ratios(targets, levels),
        "",
        "## Memory under load",
        "",
        *_rss(rss),
        "",
        "## Where a GetTask's time goes, by subtraction",
        "",
        *_subtraction(targets, levels),
        "",
        "## Where the time goes, by profile",
        "",
        *_profile(profile, targets, levels),
        "",
        "## Where the CPU goes, natively",
        "",
        *_native(native, targets, levels),
        "",
    ]
    return "\n".join(lines)
