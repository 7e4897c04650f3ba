"""`make bench`: one run, every target, same load generator; prints a table and writes docs/benchmarks.md.

Knobs (environment): BENCH_SECONDS per measurement (10), BENCH_ROUNDS (3), BENCH_CONCURRENCY ("8,64"),
BENCH_MAX_WORKERS (16), BENCH_ONLY (comma-separated target keys: bare, aio, get, get-deadline, list, create,
get-floor, quiet, fastapi, fastapi-floor, pg-get, pg-get-deadline, pg-list, pg-create, workers),
BENCH_RSS_SECONDS (60; 0 skips), BENCH_PROFILE_SECONDS (10 per profile, py-spy and perf; 0 skips),
BENCH_OUTPUT (docs/benchmarks.md; empty: print only), BENCH_PG_URL (postgresql://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from bench import calls, machine, native_profile, processes, report
from bench.grpc_frames import unframe
from bench.h2load import Load, Result, run_load
from bench.native_profile import NativeProfile
from bench.profile import Profile, record, summarize
from bench.scratch_postgres import scratch_database
from client.dev_tokens import mint_hs256_token

BIN = processes.BIN
WARM_UP_SECONDS = 1.0
# todo-server's default thread pool, given to the bare server too (BENCH_MAX_WORKERS tries others).
MAX_WORKERS = int(os.environ.get("BENCH_MAX_WORKERS", "16"))
# Profiled with perf, side by side: the bare server, todo-server without and with its data layer.
NATIVE_PROFILED = ("bare", "get-floor", "get")


@dataclass
class Target:
    key: str
    label: str
    server: processes.ServerProcess
    call: calls.GrpcCall | None = None  # None: the REST GetTask
    rest_path: str = ""
    rest_authorization: str = ""
    load_cpus: str | None = None
    # For CreateTask: each load calls as a new writer (this mints its token), so that no writer reaches the
    # tasks one user may keep, and each create's count of its user's tasks stays what a busy user's is.
    new_caller: Callable[[], str] | None = None
    expected_bytes: float | None = None
    byte_tolerance: float = 0.0
    results: dict[int, list[Result]] = field(default_factory=dict)
    # Server CPU time per call, each round: what a call costs the server, whatever else the machine runs.
    cpu_us_per_call: dict[int, list[float]] = field(default_factory=dict)

    def load(self, concurrency: int, seconds: float) -> Load:
        if self.call is None:
            return Load(
                url=f"http://127.0.0.1:{self.server.port}{self.rest_path}",
                concurrency=concurrency,
                seconds=seconds,
                headers=(f"authorization: {self.rest_authorization}",),
                http1=True,
                cpus=self.load_cpus,
            )
        call = self.call if self.new_caller is None else replace(self.call, token=self.new_caller())
        return Load(
            url=f"http://127.0.0.1:{self.server.port}{call.method}",
            concurrency=concurrency,
            seconds=seconds,
            headers=call.headers,
            body_file=call.body_file,
            cpus=self.load_cpus,
        )


@dataclass(frozen=True)
class Options:
    seconds: float
    rounds: int
    concurrency: tuple[int, ...]
    only: frozenset[str]
    rss_seconds: float
    profile_seconds: float
    output: Path | None
    pg_url: str

    @classmethod
    def from_environment(cls) -> Options:
        env = os.environ
        output = env.get("BENCH_OUTPUT", "docs/benchmarks.md")
        return cls(
            seconds=float(env.get("BENCH_SECONDS", "10")),
            rounds=int(env.get("BENCH_ROUNDS", "3")),
            concurrency=tuple(int(c) for c in env.get("BENCH_CONCURRENCY", "8,64").split(",")),
            only=frozenset(k for k in env.get("BENCH_ONLY", "").split(",") if k),
            rss_seconds=float(env.get("BENCH_RSS_SECONDS", "60")),
            profile_seconds=float(env.get("BENCH_PROFILE_SECONDS", "10")),
            output=Path(output) if output else None,
            pg_url=env.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
        )

    def wants(self, key: str) -> bool:
        return not self.only or key in self.only


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, options: Options, scratch: Path) -> None:
        self.options = options
        self.scratch = scratch
        self.secret = secrets.token_urlsafe(48)
        (scratch / "secret").write_text(self.secret)
        self.pinned = processes.taskset_works() and (os.cpu_count() or 1) >= 2
        self.server_cpus, self.load_cpus = ("0", "1") if self.pinned else (None, None)
        self.servers: list[processes.ServerProcess] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self._writers = 0

    # --- servers -------------------------------------------------------------------------------------
    def _start(self, name: str, command: list[str], marker: str, *, cpus: str | None, count: int = 1, **kw):  # type: ignore[no-untyped-def]
        port = kw.pop("port")
        server = processes.start(
            name, command, port=port, scratch=self.scratch, cpus=cpus, ready_marker=marker, ready_count=count, **kw
        )
        self.servers.append(server)
        return server

    def start_bare(self, aio: bool) -> processes.ServerProcess:
        port = processes.free_port()
        command = [
            sys.executable,
            "-m",
            "bench.bare_server",
            "--port",
            str(port),
            "--max-workers",
            str(MAX_WORKERS),
        ]
        if aio:
            command.append("--aio")
        name = "bare-aio" if aio else "bare-grpcio"
        return self._start(name, command, "serving on", cpus=self.server_cpus, port=port, env=_repo_path())

    def start_todo(  # type: ignore[no-untyped-def]
        self, name: str, database_url: str, *, workers=1, pinned=True, log_level="INFO", floor=False
    ):
        port = processes.free_port()
        # The floor: the same server with its data layer answered from memory (bench/floors.py).
        program = [sys.executable, "-m", "bench.floors", "todo-server"] if floor else [str(BIN / "todo-server")]
        command = [*program, "--listen", f"127.0.0.1:{port}", "--database-url", database_url]
        command += [
            "--max-workers",
            str(MAX_WORKERS),
            "--workers",
            str(workers),
            "--migrate",
            "--log-level",
            log_level,
        ]
        env = {"BETTER_AUTH_SECRET": self.secret, **_repo_path()}
        cpus = self.server_cpus if pinned else None
        marker = "serving todo.v1.TaskService" if log_level == "INFO" else ""  # else: when the port answers
        return self._start(name, command, marker, cpus=cpus, count=workers, port=port, env=env)

    def start_fastapi(self, database_url: str, *, floor: bool = False) -> processes.ServerProcess:
        port = processes.free_port()
        program = ["bench.floors", "fastapi"] if floor else ["bench.fastapi_app"]
        command = [sys.executable, "-m", *program, "--port", str(port), "--database-url", database_url]
        command += ["--secret-file", str(self.scratch / "secret")]
        name = "fastapi-floor" if floor else "fastapi"
        return self._start(name, command, "", cpus=self.server_cpus, port=port, env=_repo_path())

    # --- targets -------------------------------------------------------------------------------------
    def add_grpc(
        self, key: str, label: str, server, call: calls.GrpcCall, *, tolerance: float = 0.0, load_cpus=...
    ):  # type: ignore[no-untyped-def]
        new_caller = self._new_writer if call.method.endswith("/CreateTask") else None
        # The exact bytes h2load sends get an OK answer (from a new writer's call, for CreateTask).
        probe = call if new_caller is None else replace(call, token=new_caller())
        expected = calls.call_once(server.port, probe)
        cpus = self.load_cpus if load_cpus is ... else load_cpus
        target = Target(
            key, label, server, call, load_cpus=cpus, expected_bytes=expected, byte_tolerance=tolerance
        )
        target.new_caller = new_caller
        self.targets.append(target)

    def _new_writer(self) -> str:
        """A token for a writer no call has used yet; every writer's name has the same length, and so has
        every CreateTask answer (its task's name holds the writer's id)."""
        self._writers += 1
        subject = f"{calls.WRITER}-{self._writers:06d}"
        return mint_hs256_token(secret=self.secret.encode(), subject=subject, ttl_seconds=24 * 3600)

    def add_rest(self, key: str, label: str, server: processes.ServerProcess, data: calls.Dataset) -> None:
        task_id = data.task_name.rsplit("/", 1)[1]
        answer = calls.rest_get_once(server.port, task_id, data.reader_token)
        if answer.get("name") != data.task_name:
            raise RuntimeError(f"{key} answered {answer!r}, not the task {data.task_name}")
        target = Target(key, label, server, None, load_cpus=self.load_cpus)
        target.rest_path = f"/v1/users/me/tasks/{task_id}"
        target.rest_authorization = f"Bearer {data.reader_token}"
        self.targets.append(target)

    def build(self, pg_database_url: str | None) -> None:
        opts = self.options
        sqlite_url = f"sqlite:///{self.scratch / 'todo.db'}"
        todo = self.start_todo("todo-sqlite", sqlite_url)
        data = calls.seed(todo.port, self.secret.encode())
        grpc_calls = calls.grpc_calls(self.scratch, data)
        self._check_list_page(todo.port, grpc_calls["ListTasks"])
        if opts.wants("bare"):
            bare_get = calls.write_call(
                self.scratch, "bare-get", "GetTask", pb.GetTaskRequest(name=data.task_name), None
            )
            self.add_grpc("bare", "a. bare grpcio (sync, 16 threads)", self.start_bare(aio=False), bare_get)
        if opts.wants("aio"):
            bare_get = calls.write_call(
                self.scratch, "bare-get", "GetTask", pb.GetTaskRequest(name=data.task_name), None
            )
            self.add_grpc("aio", "a'. bare grpc.aio (reference)", self.start_bare(aio=True), bare_get)
        for method, key, tolerance in (
            ("GetTask", "get", 0.0),
            ("ListTasks", "list", 0.0),
            ("CreateTask", "create", 2.0),
        ):
            if opts.wants(key):
                self.add_grpc(
                    key, f"b. todo-server {method}, SQLite", todo, grpc_calls[method], tolerance=tolerance
                )
        if opts.wants("get-deadline"):
            label = "b. todo-server GetTask, SQLite, with a deadline (grpc-timeout 10S)"
            self.add_grpc("get-deadline", label, todo, replace(grpc_calls["GetTask"], deadline_seconds=10))
        if opts.wants("get-floor"):
            floor = self.start_todo("todo-sqlite-floor", sqlite_url, floor=True)
            label = "b0. todo-server GetTask, data layer answered from memory"
            self.add_grpc("get-floor", label, floor, grpc_calls["GetTask"])
        if opts.wants("quiet"):
            quiet = self.start_todo("todo-sqlite-quiet", sqlite_url, log_level="WARNING")
            self.add_grpc("quiet", "b'. GetTask, SQLite, access log off (WARNING)", quiet, grpc_calls["GetTask"])
        for key, label, floor in (
            ("fastapi", "d. FastAPI + uvicorn GetTask, SQLite", False),
            ("fastapi-floor", "d0. FastAPI GetTask, data layer answered from memory", True),
        ):
            if opts.wants(key):
                self.add_rest(key, label, self.start_fastapi(sqlite_url, floor=floor), data)
        if pg_database_url is not None:
            pg = self.start_todo("todo-postgres", pg_database_url)
            pg_data = calls.seed(pg.port, self.secret.encode())
            pg_calls = calls.grpc_calls(self.scratch / "pg", pg_data)
            for method, key, tolerance in (
                ("GetTask", "pg-get", 0.0),
                ("ListTasks", "pg-list", 0.0),
                ("CreateTask", "pg-create", 2.0),
            ):
                if opts.wants(key):
                    self.add_grpc(
                        key, f"c. todo-server {method}, PostgreSQL", pg, pg_calls[method], tolerance=tolerance
                    )
            if opts.wants("pg-get-deadline"):
                label = "c. todo-server GetTask, PostgreSQL, with a deadline (grpc-timeout 10S)"
                self.add_grpc("pg-get-deadline", label, pg, replace(pg_calls["GetTask"], deadline_seconds=10))
        if opts.wants("workers"):
            # Both unpinned: two workers need both cores, so here h2load shares them with the server.
            one = self.start_todo("todo-sqlite-1w", sqlite_url, pinned=False)
            two = self.start_todo("todo-sqlite-2w", sqlite_url, workers=2, pinned=False)
            self.add_grpc(
                "w1", "w. GetTask SQLite, 1 worker, unpinned", one, grpc_calls["GetTask"], load_cpus=None
            )
            self.add_grpc(
                "w2", "w. GetTask SQLite, --workers 2, unpinned", two, grpc_calls["GetTask"], load_cpus=None
            )

    @staticmethod
    def _check_list_page(port: int, call: calls.GrpcCall) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            page = pb_grpc.TaskServiceStub(channel).ListTasks(
                pb.ListTasksRequest.FromString(unframe(call.body_file.read_bytes())),
                metadata=(("authorization", f"Bearer {call.token}"),),
            )
        if len(page.tasks) != calls.LIST_PAGE:
            raise RuntimeError(f"ListTasks returned {len(page.tasks)} tasks, not a page of {calls.LIST_PAGE}")

    # --- measuring -----------------------------------------------------------------------------------
    def measure(self) -> None:
        opts = self.options
        for round_number in range(1, opts.rounds + 1):
            for target in self.targets:  # alternate targets within each round, so drift hits them all alike
                for concurrency in opts.concurrency:
                    load = target.load(concurrency, opts.seconds)
                    run_load(replace(load, seconds=WARM_UP_SECONDS), warm_up_seconds=0)
                    cpu_before = target.server.cpu_seconds()
                    result = run_load(load, warm_up_seconds=0)
                    cpu_us = (target.server.cpu_seconds() - cpu_before) / max(result.done, 1) * 1e6
                    self._check_bytes(target, result)
                    target.results.setdefault(concurrency, []).append(result)
                    target.cpu_us_per_call.setdefault(concurrency, []).append(cpu_us)
                    _log(
                        f"round {round_number} {target.key:>9} c={concurrency:<3} "
                        f"{result.requests_per_second:9.0f} req/s"
                        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms"
                        f"  server CPU {cpu_us:5.0f} us/call"
                    )

    @staticmethod
    def _check_bytes(target: Target, result: Result) -> None:
        # h2load counts a gRPC error (trailers only) as HTTP 200; but an error carries no message bytes.
        if target.expected_bytes is None:
            return
        if abs(result.data_bytes_per_response - target.expected_bytes) > target.byte_tolerance + 0.01:
            raise RuntimeError(
                f"{target.key}: {result.data_bytes_per_response:.2f} data bytes per response, expected "
                f"{target.expected_bytes}: some calls did not answer OK"
            )

    def rss_run(self) -> report.RssRun | None:
        seconds = self.options.rss_seconds
        target = next((t for t in self.targets if t.key == "get"), None)
        if seconds <= 0 or target is None:
            return None
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not done.wait(1.0):
                samples.append((time.monotonic() - started, target.server.rss_bytes()))

        _log(f"RSS run: GetTask for {seconds:g} s at c={max(self.options.concurrency)}")
        sampler = threading.Thread(target=sample, daemon=True)
        samples.append((0.0, target.server.rss_bytes()))
        sampler.start()
        result = run_load(target.load(max(self.options.concurrency), seconds), warm_up_seconds=0)
        done.set()
        sampler.join()
        self._check_bytes(target, result)
        return report.RssRun(seconds=seconds, samples=samples, result=result)

    def profile(self) -> Profile | None:
        seconds = self.options.profile_seconds
        target = next((t for t in self.targets if t.key == "get"), None)
        if seconds <= 0 or target is None:
            return None
        _log(f"profiling todo-server GetTask with py-spy for {seconds:g} s")
        out = self.scratch / "profile.txt"
        self._under_load(target, seconds, partial(record, target.server.process.pid, seconds, out))
        return summarize(out)

    def native_profiles(self) -> dict[str, NativeProfile] | str:
        """perf profiles of the bare server, the floor and GetTask under the same load; or why there are none."""
        seconds = self.options.profile_seconds
        targets = [t for key in NATIVE_PROFILED for t in self.targets if t.key == key]
        if seconds <= 0 or not targets:
            return "BENCH_PROFILE_SECONDS=0, or none of the targets " + ", ".join(NATIVE_PROFILED)
        reason = native_profile.unavailable_reason()
        if reason is not None:
            return reason
        profiles = {}
        for target in targets:
            _log(f"profiling {target.label} with perf for {seconds:g} s")
            out = self.scratch / f"{target.key}.perf.data"
            self._under_load(target, seconds, partial(native_profile.record, target.server.pids(), seconds, out))
            profiles[target.key] = native_profile.summarize(out)
        return profiles

    def _under_load(self, target: Target, seconds: float, measure: Callable[[], object]) -> None:
        """Runs `measure` (which takes `seconds`) while h2load keeps `target` at the highest concurrency."""
        load = target.load(max(self.options.concurrency), seconds + 3)
        loader = threading.Thread(target=run_load, args=(load,), daemon=True)
        loader.start()
        time.sleep(1.5)  # past the load's start, into its steady state
        measure()
        loader.join()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _repo_path() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}


def run(options: Options, command: str) -> str:
    started = time.time()
    facts = machine.describe()
    with tempfile.TemporaryDirectory(prefix="todo-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "pg").mkdir()
        bench = Bench(options, scratch)
        with scratch_database(options.pg_url) as pg_url:
            if pg_url is None:
                bench.notes.append(f"PostgreSQL at {options.pg_url} was not reachable: section c was skipped.")
            try:
                bench.build(pg_url)
                _log(f"{len(bench.targets)} targets verified; measuring {options.rounds} rounds")
                bench.measure()
                rss = bench.rss_run()
                profile = bench.profile()
                native = bench.native_profiles()
            finally:
                bench.stop()
    return report.render(
        command=command,
        options=options,
        facts=facts,
        pinned=bench.pinned,
        targets=bench.targets,
        rss=rss,
        profile=profile,
        native=native,
        notes=bench.notes,
        seconds_taken=time.time() - started,
    )


def main() -> int:
    options = Options.from_environment()
    knobs = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    markdown = run(options, f"{knobs} make bench".strip())
    print(markdown)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(markdown)
        _log(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
