"""Hands each call's gRPC deadline to `server.call_deadline`, where the data layer reads it."""

from __future__ import annotations

import grpc

from server.call_deadline import set_call_deadline
from server.call_pipeline import Layer
from server.rpc_handlers import Behavior, wrap_method_handler

# grpcio's time_remaining() for a call without a deadline: about 292 billion years (gpr_inf_future).
# Anything past a century is taken for that.
_NO_DEADLINE_SECONDS = 100 * 365 * 24 * 3600


class DeadlineInterceptor(Layer):
    """Records each call's deadline (grpc's `time_remaining()`) where the data layer can read it; a call
    without one leaves it unset, and the data layer's own limits apply."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:

        def wrap(behavior: Behavior, _response_streaming: bool) -> Behavior:
            def call(request: object, context: grpc.ServicerContext) -> object:
                remaining = context.time_remaining()
                if remaining is not None and remaining < _NO_DEADLINE_SECONDS:
                    set_call_deadline(remaining)
                return behavior(request, context)

            return call

        return wrap_method_handler(handler, wrap)
