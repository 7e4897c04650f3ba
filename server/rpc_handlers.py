"""Wrapping a grpc.RpcMethodHandler's behaviour, whatever its kind, so interceptors work inside the call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]
# Takes the handler's behaviour and whether it streams responses; returns the behaviour to run instead.
BehaviorWrapper = Callable[[Behavior, bool], Behavior]


def wrap_method_handler(
    handler: grpc.RpcMethodHandler,
    wrap: BehaviorWrapper,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """Returns `handler` with its behaviour replaced by `wrap(behaviour, response_streaming)`.

    The wrapped behaviour runs on the pool thread that serves the call, not on grpcio's serving thread
    (where `intercept_service` runs and dispatches every RPC), so it may block. `request_deserializer`,
    if given, replaces the handler's (outer interceptors keep whichever the handler they wrap has).
    """
    deserialize = request_deserializer or handler.request_deserializer
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), deserialize, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), deserialize, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), deserialize, serialize)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), deserialize, serialize)


def service_of(method: str) -> str:
    """`/todo.v1.TaskService/GetTask` → `todo.v1.TaskService`."""
    return method[1 : method.rfind("/")]


def when_the_call_ends(context: grpc.ServicerContext, callback: Callable[[], object]) -> None:
    """Runs `callback` when the call ends, not when its handler returns: once its answer is delivered (grpcio
    holds it until the client has read it), or the call is cancelled; at once if it has already ended."""
    if not context.add_callback(callback):
        callback()


def final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status a call ended with, as the layers that report it (metrics, access log, tracing) count it.

    A call no longer active with no status set was cancelled by its client, however its handler ended (a
    stream may raise RpcError or GeneratorExit, or just stop): CANCELLED, as go-grpc-prometheus counts it.
    Otherwise a handler that raised gets UNKNOWN from grpcio.
    """
    code = context.code()
    if code is not None:
        return code
    if not context.is_active():
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
