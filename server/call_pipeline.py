"""Layers around every call (auth, logging, metrics...), composed once per method instead of once per call.

grpcio runs `intercept_service` for every RPC on its one serving thread, the thread that dispatches all
calls. A chain of plain interceptors would rebuild its handlers there on each call (that was about an eighth
of a GetTask); here each method's handler is wrapped the first time it is called and reused after, so
dispatch costs one dictionary lookup. Anything that differs per call (metadata, deadline) is read inside
the call, on the pool thread, from its ServicerContext.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import grpc


class Layer(grpc.ServerInterceptor, abc.ABC):
    """One job done around calls. Composed with others by CallPipeline, or used alone as an interceptor."""

    _alone: CallPipeline | None = None

    @abc.abstractmethod
    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to run for `method` in place of `handler` (or `handler` itself, to stay out)."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if self._alone is None:
            self._alone = CallPipeline((self,))
        return self._alone.intercept_service(continuation, handler_call_details)


class CallPipeline(grpc.ServerInterceptor):
    """One interceptor for many layers, outermost first; each method's wrapped handler is built once."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self._innermost_first = tuple(reversed(layers))
        # method -> (the handler it wrapped, the wrapped one). Only registered methods get here, so it is
        # bounded; an unknown method (handler None) is never stored.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = handler
        for layer in self._innermost_first:
            wrapped = layer.wrap_handler(method, wrapped)
        self._wrapped[method] = (handler, wrapped)  # a race only builds the same thing twice
        return wrapped
