"""One log line per RPC: method, status, duration, caller, peer, request id. Never a token, secret or content."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import grpc

from server.call_pipeline import Layer
from server.identity import peek_identity
from server.rpc_handlers import Behavior, final_code, wrap_method_handler

REQUEST_ID_KEY = "x-request-id"
# A caller's request id is logged as is, so it must not be able to forge a line or flood the log.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

_TEXT = (
    "rpc method=%(method)s code=%(code)s duration_ms=%(duration_ms).2f user=%(user)s peer=%(peer)s "
    "request_id=%(request_id)s"
)
_TEXT_TRACED = _TEXT + " trace_id=%(trace_id)s"

_log = logging.getLogger("todo.access")


def request_id_of(metadata: Any) -> str:
    """The caller's `x-request-id` when it is safe to log, else a fresh random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SAFE_REQUEST_ID.fullmatch(value):
            return value
    return os.urandom(8).hex()


def _finish(
    method: str,
    request_id: str,
    context: grpc.ServicerContext,
    started: float,
    failed: bool,
    trace_id_of: Callable[[], str] | None,
) -> None:
    # abort_with_status replaces the trailing metadata, so the request id is added last, on every path.
    context.set_trailing_metadata((*(context.trailing_metadata() or ()), (REQUEST_ID_KEY, request_id)))
    if not _log.isEnabledFor(logging.INFO):
        return
    code = final_code(context, failed)
    identity = peek_identity()
    fields = {
        "method": method,
        "code": code.name,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "user": identity.user_id if identity else "-",
        "peer": context.peer(),
        "request_id": request_id,
    }
    text = _TEXT
    if trace_id_of is not None:
        fields["trace_id"] = trace_id_of()
        text = _TEXT_TRACED
    # handle(makeRecord(...)) is what _log.info does, minus its walk up the stack for the caller's file and
    # line, which would only ever find this function: work skipped on every call.
    record = _log.makeRecord(_log.name, logging.INFO, __file__, 0, text, (fields,), None, extra={"rpc": fields})
    _log.handle(record)


class AccessLogInterceptor(Layer):
    """Outermost but for tracing, so it sees auth failures and the final status of every call.

    `trace_id_of`, given when tracing is on, names the call's trace in its line, to go from log to trace.
    """

    def __init__(self, *, trace_id_of: Callable[[], str] | None = None) -> None:
        self._trace_id_of = trace_id_of

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        trace_id_of = self._trace_id_of

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    started = time.perf_counter()
                    request_id = request_id_of(context.invocation_metadata())
                    failed = True
                    try:
                        yield from behavior(request, context)
                        failed = False
                    finally:
                        _finish(method, request_id, context, started, failed, trace_id_of)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                request_id = request_id_of(context.invocation_metadata())
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    _finish(method, request_id, context, started, failed, trace_id_of)

            return unary

        return wrap_method_handler(handler, wrap)
