"""A bound on the bytes of answers made but not yet delivered: per signed-in user, and in all.

grpcio holds a call's response until its client has read it (HTTP/2 flow control), and the call stays in
flight until then. A client that grants no flow-control window never reads it: one user's 100 calls in
flight, each a ListTasks page of up to 3 MiB, held about 650 MB of the server, and ten accounts could hold
every call the server takes (6.5 GB). So a caller whose unread answers reach their share is refused until
some are read, and past the bound over all callers only callers with nothing unread are served: a BFF that
reads its answers is never refused for what others leave unread.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import grpc

from server.call_pipeline import Layer
from server.errors import ResourceExhausted
from server.identity import current_user_id
from server.rpc_handlers import Behavior, service_of, when_the_call_ends, wrap_method_handler

ANSWER_BUFFER_EXHAUSTED = "ANSWER_BUFFER_EXHAUSTED"


def _size_of(answer: Any) -> int:
    """The bytes `answer` takes on the wire: a protobuf message's size, or the length of raw bytes (what a
    handler registered without a serializer returns)."""
    if isinstance(answer, bytes | bytearray | memoryview):
        return len(answer)
    return int(answer.ByteSize())


class UnreadAnswersLimit(Layer):
    """Counts each unary answer's bytes against its caller from when it is made until its call ends. A call
    is refused at once (RESOURCE_EXHAUSTED) when its caller's unread bytes reach `per_user_bytes`, or when
    they have any while all callers' reach `limit_bytes`. Put it after the AuthInterceptor, which sets the
    caller; calls to `public_services`, and streamed answers (none in TaskService), are not counted."""

    def __init__(self, public_services: frozenset[str], *, limit_bytes: int, per_user_bytes: int) -> None:
        if limit_bytes < 1 or per_user_bytes < 1:
            raise ValueError(f"answer byte bounds must be at least 1, not {limit_bytes} and {per_user_bytes}")
        self._public_services = public_services
        self._limit = limit_bytes
        self._per_user = per_user_bytes
        self._lock = threading.Lock()
        self._unread = 0
        self._by_user: dict[str, int] = {}  # only callers with answers unread

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if service_of(method) in self._public_services or handler.response_streaming:
            return handler
        admit, hold = self._admit, self._hold

        def wrap(behavior: Behavior, _response_streaming: bool) -> Behavior:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                user_id = current_user_id()
                admit(user_id)
                response = behavior(request, context)
                size = 0 if response is None else _size_of(response)
                if size:  # an empty answer holds nothing; and a caller's entry exists only while it holds bytes
                    hold(user_id, size, context)
                return response

            return unary

        return wrap_method_handler(handler, wrap)

    def _admit(self, user_id: str) -> None:
        with self._lock:
            mine = self._by_user.get(user_id, 0)
            over_mine, over_all = mine >= self._per_user, mine > 0 and self._unread >= self._limit
        if over_mine or over_all:
            raise ResourceExhausted(
                ("your answers not yet read hold" if over_mine else "answers not yet read hold")
                + " too much of the server's memory: read them, or cancel those calls, and try again",
                reason=ANSWER_BUFFER_EXHAUSTED,
            )

    def _hold(self, user_id: str, size: int, context: grpc.ServicerContext) -> None:
        """Counts `size` bytes against `user_id` until the call ends: its answer delivered, or cancelled."""
        with self._lock:
            self._unread += size
            self._by_user[user_id] = self._by_user.get(user_id, 0) + size
        when_the_call_ends(context, functools.partial(self._release, user_id, size))

    def _release(self, user_id: str, size: int) -> None:
        with self._lock:
            self._unread -= size
            left = self._by_user[user_id] - size
            if left:
                self._by_user[user_id] = left
            else:
                del self._by_user[user_id]
