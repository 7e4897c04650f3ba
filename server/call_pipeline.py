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

from server.pending_request import receiving_request, served_before_request


class Layer(grpc.ServerInterceptor, abc.ABC):
    """One job done around calls. Composed with others by CallPipeline, or used alone as an interceptor."""

    _alone: CallPipeline | None = None

    @abc.abstractmethod
    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to run for `method` in place of `handler` (or `handler` itself, to stay out)."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if self._alone is None:
            self._alone = CallPipeline(after_request=(self,))
        return self._alone.intercept_service(continuation, handler_call_details)


class CallPipeline(grpc.ServerInterceptor):
    """One interceptor for many layers, outermost first; each method's wrapped handler is built once.

    `before_request` layers run as soon as a call is dispatched, before a unary call's request message is
    in (server/pending_request.py): what they get as the request is a PendingRequest, which they leave
    alone. A call they refuse (no valid token, say) then ends at once, instead of first waiting for a
    message that may never come. `after_request` layers, and the method, run once the message is in.
    """

    def __init__(self, *, before_request: Sequence[Layer] = (), after_request: Sequence[Layer] = ()) -> None:
        self._before_innermost_first = tuple(reversed(before_request))
        self._after_innermost_first = tuple(reversed(after_request))
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
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)  # a race only builds the same thing twice
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for layer in self._after_innermost_first:
            handler = layer.wrap_handler(method, handler)
        if not self._before_innermost_first:
            return handler
        handler = receiving_request(handler)
        for layer in self._before_innermost_first:
            handler = layer.wrap_handler(method, handler)
        return served_before_request(handler)
