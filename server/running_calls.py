"""At most `--max-workers` calls run the method (and the data layer) at once, from when their request arrived,
and at most a quarter of them for one signed-in user.

The executor (server/rpc_threads.py) gives every call in flight a thread, so that a call stalled before
its request message costs a parked thread, not a worker. This layer keeps what the fixed pool used to
bound: how many calls compete for the GIL and for the database pool's `--max-workers` connections.

One user can make their own calls slow at will (a `query` that scans thousands of their long tasks), and may
have 100 in flight: with one queue for everyone, such calls held every turn and other users' calls waited
behind them until their deadlines (tests/test_caller_turns.py). So a caller's calls past their share wait
for one of the caller's own turns first, and the shared turns stay free for everyone else.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import grpc

from server.call_pipeline import Layer
from server.identity import peek_identity
from server.limits import caller_turns
from server.rpc_handlers import Behavior, wrap_method_handler


def _turns(count: int) -> queue.SimpleQueue[None]:
    # A queue of tokens, not a threading.Semaphore: taking and giving back one is a single C call, and a
    # waiting thread sleeps in C, where a Semaphore runs a Python Condition on every call.
    turns: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(count):
        turns.put(None)
    return turns


@dataclass(slots=True)
class _CallerTurns:
    """One caller's own turns, and how many of their calls hold or wait for one."""

    turns: queue.SimpleQueue[None]
    calls: int = field(default=0)


class RunningCallsInterceptor(Layer):
    """Lets `limit` calls run at once, and at most caller_turns(limit) of one signed-in user's; the others
    wait, on their own thread, for one to end. Calls with no caller (health, reflection) take a shared turn.

    Only calls whose request arrived whole (unary requests) take a turn: a request-streaming call would
    wait for its messages inside its turn, which is the very stall the executor keeps from starving others.
    Put it first among the CallPipeline's layers after the request: the layers before it (auth, logging)
    run at dispatch, before the message is in, which a turn must not wait for; auth has set the caller.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the running calls limit must be at least 1, not {limit}")
        self._turns = _turns(limit)
        self._per_caller = caller_turns(limit)
        self._lock = threading.Lock()
        self._callers: dict[str, _CallerTurns] = {}  # only callers with calls here: bounded by calls in flight

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming:
            return handler
        return wrap_method_handler(handler, self._taking_turns)

    def _taking_turns(self, behavior: Behavior, _response_streaming: bool) -> Behavior:
        take_turn, give_back = self._turns.get, self._turns.put
        enter, leave = self._enter, self._leave

        def call(request: object, context: grpc.ServicerContext) -> object:
            identity = peek_identity()
            own = enter(identity.user_id) if identity is not None else None
            try:
                take_turn()
                try:
                    return behavior(request, context)
                finally:
                    give_back(None)
            finally:
                if own is not None:
                    leave(own)

        return call

    def _enter(self, user_id: str) -> tuple[str, _CallerTurns]:
        """Waits for one of `user_id`'s own turns."""
        with self._lock:
            caller = self._callers.get(user_id)
            if caller is None:
                caller = self._callers[user_id] = _CallerTurns(_turns(self._per_caller))
            caller.calls += 1
        caller.turns.get()
        return user_id, caller

    def _leave(self, own: tuple[str, _CallerTurns]) -> None:
        user_id, caller = own
        caller.turns.put(None)
        with self._lock:
            caller.calls -= 1
            if not caller.calls:
                del self._callers[user_id]
