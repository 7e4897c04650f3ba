"""Hands each call's gRPC deadline to `server.call_deadline`, where the data layer reads it."""

from __future__ import annotations

import grpc

from server.call_deadline import set_call_deadline
from server.call_pipeline import Layer
from server.rpc_handlers import Behavior, wrap_method_handler


class DeadlineInterceptor(Layer):
    """Records each call's deadline (grpc's `time_remaining()`) where the data layer can read it."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:

        def wrap(behavior: Behavior, _response_streaming: bool) -> Behavior:
            def call(request: object, context: grpc.ServicerContext) -> object:
                remaining = context.time_remaining()
                if remaining is not None:
                    set_call_deadline(remaining)
                return behavior(request, context)

            return call

        return wrap_method_handler(handler, wrap)
