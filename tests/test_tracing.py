"""OpenTelemetry tracing: a SERVER span per RPC that continues the BFF's trace; nothing loaded when off."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import build_server
from server.config import Settings
from tests.support import User, failure_of, mint_token

BFF_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
BFF_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans_and_stub(settings: Settings) -> Iterator[tuple[InMemorySpanExporter, pb_grpc.TaskServiceStub]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    todo_server = build_server(dataclasses.replace(settings, tracing=True), tracer_provider=provider)
    todo_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
            yield exporter, pb_grpc.TaskServiceStub(channel)
    finally:
        todo_server.stop(grace=None)
        provider.shutdown()


def test_a_call_continues_the_trace_the_bff_sent(
    spans_and_stub: tuple[InMemorySpanExporter, pb_grpc.TaskServiceStub],
    secret: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="todo.access")
    exporter, stub = spans_and_stub
    alice = User("tracedalice", mint_token(secret, "tracedalice"), stub)
    alice.metadata = (*alice.metadata, ("traceparent", f"00-{BFF_TRACE_ID}-{BFF_SPAN_ID}-01"))
    alice.create_task("traced")
    [span] = [s for s in exporter.get_finished_spans() if s.name == "/todo.v1.TaskService/CreateTask"]
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == BFF_TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == BFF_SPAN_ID
    assert span.attributes["rpc.service"] == "todo.v1.TaskService"
    assert span.attributes["rpc.method"] == "CreateTask"
    [line] = [r for r in caplog.records if r.name == "todo.access" and "CreateTask" in r.getMessage()]
    assert line.getMessage().endswith(f"trace_id={BFF_TRACE_ID}")  # from the log line to the trace


def test_spans_carry_the_status_the_caller_got(
    spans_and_stub: tuple[InMemorySpanExporter, pb_grpc.TaskServiceStub], secret: bytes
) -> None:
    exporter, stub = spans_and_stub
    nobody = User("nobody", "not-a-jwt", stub)
    assert failure_of(nobody.list_tasks).code == grpc.StatusCode.UNAUTHENTICATED
    alice = User("spanalice", mint_token(secret, "spanalice"), stub)
    alice.list_tasks()
    refused, served = [s for s in exporter.get_finished_spans() if s.name.endswith("/ListTasks")]
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused.status.status_code == StatusCode.UNSET  # the caller's fault, not the server's
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]


def test_without_otel_settings_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    script = (
        "import sys; from server.app import run_server; from server.config import Settings, Secret\n"
        f"s = Settings(listen='127.0.0.1:0', database_url='sqlite:///{tmp_path}/todo.db', "
        "better_auth_secret=Secret(b'x' * 40), max_workers=2, migrate=True)\n"
        "with run_server(s): pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
