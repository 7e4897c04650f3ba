"""One log line per RPC: method, status, duration, caller. Never a token, a secret or task content."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from server.identity import peek_identity
from server.rpc_handlers import Behavior, wrap_method_handler

_log = logging.getLogger("todo.access")


def _log_call(method: str, context: grpc.ServicerContext, started: float) -> None:
    code = context.code() or grpc.StatusCode.OK
    identity = peek_identity()
    _log.info(
        "rpc method=%s code=%s duration_ms=%.2f user=%s peer=%s",
        method,
        code.name,
        (time.perf_counter() - started) * 1000,
        identity.user_id if identity else "-",
        context.peer(),
    )


class AccessLogInterceptor(grpc.ServerInterceptor):
    """Outermost interceptor, so it sees auth failures and the final status of every call."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or not _log.isEnabledFor(logging.INFO):
            return handler
        method = handler_call_details.method

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    started = time.perf_counter()
                    try:
                        yield from behavior(request, context)
                    finally:
                        _log_call(method, context, started)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return behavior(request, context)
                finally:
                    _log_call(method, context, started)

            return unary

        return wrap_method_handler(handler, wrap)
