"""At most `--max-workers` calls run the method (and the data layer) at once, from when their request arrived.

The executor (server/rpc_threads.py) gives every call in flight a thread, so that a call stalled before
its request message costs a parked thread, not a worker. This layer keeps what the fixed pool used to
bound: how many calls compete for the GIL and for the database pool's `--max-workers` connections.
"""

from __future__ import annotations

import queue

import grpc

from server.call_pipeline import Layer
from server.rpc_handlers import Behavior, wrap_method_handler


class RunningCallsInterceptor(Layer):
    """Lets `limit` calls run at once; the others wait, on their own thread, for one to end.

    Only calls whose request arrived whole (unary requests) take a turn: a request-streaming call would
    wait for its messages inside its turn, which is the very stall the executor keeps from starving others.
    Put it first among the CallPipeline's layers after the request: the layers before it (auth, logging)
    run at dispatch, before the message is in, which a turn must not wait for.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the running calls limit must be at least 1, not {limit}")
        # A queue of tokens, not a threading.Semaphore: taking and giving back one is a single C call, and a
        # waiting thread sleeps in C, where a Semaphore runs a Python Condition on every call.
        self._turns: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(limit):
            self._turns.put(None)

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming:
            return handler
        return wrap_method_handler(handler, self._taking_turns)

    def _taking_turns(self, behavior: Behavior, _response_streaming: bool) -> Behavior:
        take_turn, give_back = self._turns.get, self._turns.put

        def call(request: object, context: grpc.ServicerContext) -> object:
            take_turn()
            try:
                return behavior(request, context)
            finally:
                give_back(None)

        return call
