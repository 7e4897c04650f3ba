"""The benchmark's own pieces work against the real server (the benchmark itself runs with `make bench`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb

from bench import native_profile, report
from bench.__main__ import Target
from bench.calls import call_once, write_call
from bench.grpc_frames import frame, unframe
from bench.h2load import Load, LoadError, run_load
from bench.native_profile import NativeProfile
from server.app import TodoServer
from tests.support import User


def test_a_framed_body_is_answered_ok_with_the_real_task(todo_server: TodoServer, alice: User, tmp_path: Path):
    task = alice.create_task("framed")
    call = write_call(tmp_path, "get", "GetTask", pb.GetTaskRequest(name=task.name), alice.token)

    answered = call_once(todo_server.port, call)

    assert answered == len(frame(pb.GetTaskResponse(task=alice.get_task(task.name))))


def test_the_check_call_fails_when_the_server_refuses_the_body(todo_server: TodoServer, tmp_path: Path):
    call = write_call(tmp_path, "get", "GetTask", pb.GetTaskRequest(name="users/me/tasks/x"), token=None)

    with pytest.raises(grpc.RpcError) as refused:
        call_once(todo_server.port, call)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unframe_refuses_anything_but_one_whole_message():
    body = frame(pb.GetTaskRequest(name="users/me/tasks/abc"))

    assert pb.GetTaskRequest.FromString(unframe(body)).name == "users/me/tasks/abc"
    for broken in (body[:-1], body + b"\x00", body[:3], b"\x01" + body[1:]):
        with pytest.raises(ValueError, match="gRPC"):
            unframe(broken)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed (make bench installs it)")
def test_h2load_data_bytes_tell_ok_answers_from_grpc_errors(todo_server: TodoServer, alice: User, tmp_path: Path):
    # h2load counts a gRPC error as HTTP 200; the benchmark relies on an error carrying no message bytes.
    task = alice.create_task("loaded")
    url = f"http://127.0.0.1:{todo_server.port}/todo.v1.TaskService/GetTask"
    good = write_call(tmp_path, "good", "GetTask", pb.GetTaskRequest(name=task.name), alice.token)
    bad = write_call(tmp_path, "bad", "GetTask", pb.GetTaskRequest(name=task.name), token="not-a-jwt")

    ok = run_load(Load(url, 2, 1, headers=good.headers, body_file=good.body_file), warm_up_seconds=0)
    refused = run_load(Load(url, 2, 1, headers=bad.headers, body_file=bad.body_file), warm_up_seconds=0)

    assert ok.done > 0
    assert ok.data_bytes_per_response == call_once(todo_server.port, good)
    assert refused.done > 0
    assert refused.data_bytes_per_response == 0


def test_the_report_splits_a_call_by_subtracting_the_targets_that_differ_by_one_part() -> None:
    cpu = {"bare": 100.0, "get-floor": 250.0, "get": 450.0, "fastapi-floor": 330.0, "fastapi": 470.0}
    targets = [
        Target(key, key, server=None, cpu_us_per_call={8: [us * 0.9, us, us * 1.1]}) for key, us in cpu.items()
    ]

    lines = "\n".join(report._subtraction(targets, (8,)))

    assert "| grpcio's own server with a constant handler (a) | 100 |" in lines
    assert "servicer (b0 - a) | 150 |" in lines
    assert "record (b - b0) | 200 |" in lines
    assert "(d - d0) | 140 |" in lines
    assert "a/b0 = 0.40 x the bare server" in lines
    assert "d0/b0 = 1.32 x FastAPI" in lines


def test_the_report_says_what_it_cannot_split_without_every_target() -> None:
    targets = [Target("get", "get", server=None, cpu_us_per_call={8: [450.0]})]
    assert report._subtraction(targets, (8,)) == [
        "(skipped: needs the targets bare, fastapi, fastapi-floor, get, get-floor)"
    ]


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed (make bench installs it)")
def test_a_call_with_a_deadline_sends_it_as_grpc_timeout(todo_server: TodoServer, alice: User, tmp_path: Path):
    task = alice.create_task("loaded with a deadline")
    url = f"http://127.0.0.1:{todo_server.port}/todo.v1.TaskService/GetTask"
    call = write_call(tmp_path, "get", "GetTask", pb.GetTaskRequest(name=task.name), alice.token)
    in_time, expired = replace(call, deadline_seconds=10), replace(call, deadline_seconds=0)

    answered = run_load(Load(url, 1, 1, headers=in_time.headers, body_file=call.body_file), warm_up_seconds=0)

    assert "grpc-timeout: 10S" in in_time.headers
    assert answered.data_bytes_per_response == call_once(todo_server.port, call)
    # A deadline already passed fails every call, which shows the header got there. Whichever comes first
    # ends a call: gRPC core resetting its stream, or the server's DEADLINE_EXCEEDED status.
    try:
        late = run_load(Load(url, 1, 1, headers=expired.headers, body_file=call.body_file), warm_up_seconds=0)
    except LoadError:
        return  # streams reset: h2load counts them failed
    assert late.data_bytes_per_response == 0  # statuses (HTTP 200 to h2load), none with a message


_PERF_MISSING = native_profile.unavailable_reason()
_INTERPRETER, _KERNEL = native_profile.PARTS[1][0], native_profile.PARTS[0][0]
_BUSY = {
    "python": "while True: sum(range(1000))",  # pure Python: the interpreter's time
    "syscalls": "import os\nwhile True: os.stat('/')",  # mostly the kernel's
}


@pytest.mark.skipif(_PERF_MISSING is not None, reason=f"{_PERF_MISSING}")
def test_perf_puts_a_process_time_in_the_interpreter_or_the_kernel_as_it_was_spent(tmp_path: Path) -> None:
    profiles = {}
    for name, program in _BUSY.items():
        busy = subprocess.Popen([sys.executable, "-c", program])
        try:
            data = native_profile.record([busy.pid], 1.5, tmp_path / f"{name}.data")
        finally:
            busy.kill()
            busy.wait()
        profiles[name] = native_profile.summarize(data)

    assert profiles["python"].samples > 100
    assert profiles["python"].by_part[_INTERPRETER] > 0.8
    assert profiles["syscalls"].by_part[_KERNEL] > 0.4
    assert profiles["syscalls"].kernel_functions
    assert sum(profiles["syscalls"].by_part.values()) == pytest.approx(1.0)


def test_the_native_report_splits_each_target_cpu_per_call_by_its_shares() -> None:
    cpu = {"bare": 100.0, "get-floor": 250.0, "get": 400.0}
    targets = [
        Target(key, key, server=None, cpu_us_per_call={64: [us * 0.9, us, us * 1.1]}) for key, us in cpu.items()
    ]
    shares = {"bare": (0.5, 0.3), "get-floor": (0.4, 0.5), "get": (0.25, 0.6)}  # (kernel, interpreter)
    native = {
        key: NativeProfile(
            samples=1000,
            by_part={_KERNEL: kernel, _INTERPRETER: interpreter, native_profile.OTHER: 1 - kernel - interpreter},
            kernel_functions=[("finish_task_switch", kernel / 2)],
        )
        for key, (kernel, interpreter) in shares.items()
    }

    lines = "\n".join(report._native(native, targets, (8, 64)))

    assert f"| {_KERNEL} | 50 (50%) | 100 (40%) | 100 (25%) |" in lines
    assert f"| {_INTERPRETER} | 30 (30%) | 125 (50%) | 240 (60%) |" in lines
    assert "| **all** | 100 | 250 | 400 |" in lines
    assert f"300 us more than the bare server's constant answer, most of it in: {_INTERPRETER} +210 us; " in lines
    assert "finish_task_switch 12.5%" in lines
    assert report._native("perf is not installed", targets, (64,)) == ["(skipped: perf is not installed)"]
