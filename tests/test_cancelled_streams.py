"""A client that cancels a stream it was sending on is not a server error: no ERROR line, no INTERNAL."""

from __future__ import annotations

import logging
import re
import threading

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import TodoServer
from tests.support import wait_until


def test_a_reflection_stream_cancelled_by_its_client_is_not_a_server_error(
    todo_server: TodoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What grpcurl does after each call: it cancels its reflection stream with the server still reading."""
    caplog.set_level(logging.INFO)
    cancelled = threading.Event()

    def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        cancelled.wait(10)  # the server waits for the next request, as grpcurl's stream leaves it

    def access_line() -> str | None:
        lines = [
            r.getMessage() for r in caplog.records if r.name == "todo.access" and "Reflection" in r.getMessage()
        ]
        return lines[0] if lines else None

    try:
        with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests())
            assert next(stream).list_services_response.service
            stream.cancel()
            # The request stream stays open until the server has logged the call, as grpcurl's does: ending
            # it earlier could half-close the call instead of leaving the cancel alone to end it.
            assert wait_until(access_line)
    finally:
        cancelled.set()
    # grpcio may end the server's request stream before it sees the cancel: the pending read completes empty,
    # as if the client had half-closed, and the reflection handler returns normally before the call is marked
    # cancelled. The line then says OK, grpcio's own view at that moment; what never shows is a server error.
    # (A cancel the handler does see is counted CANCELLED: tests/test_metrics.py, with health Watch.)
    code = re.search(r" code=(\w+) ", f"{access_line()} ")
    assert code is not None, access_line()
    assert code.group(1) in {"CANCELLED", "OK"}, access_line()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
