"""Bounds on the calls one kind of caller may have in flight, so that no one caller can fill the server.

Every call in flight takes one of `max_concurrent_rpcs`; past it grpcio refuses every call, whoever makes
it. A health Watch stream, a call that never sends its message, or one whose answer its client never reads
(the server holds the response until it is delivered) holds its place until its deadline or its
connection's max age (31 min). Without these bounds one client without a token, with 1000 Watch
streams, or one signed-in user, with 1000 stalled calls, locked everyone else out. A call past a bound is
refused RESOURCE_EXHAUSTED at once (limits.py says how the bounds were chosen).

Both layers run before the request message (CallPipeline's `before_request`), so that a call that never
sends it is counted, and inside ErrorStatusInterceptor, which turns the refusal into its status.
"""

from __future__ import annotations

import abc
import functools
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from server.call_pipeline import Layer
from server.errors import ResourceExhausted
from server.identity import current_user_id
from server.rpc_handlers import Behavior, service_of, when_the_call_ends, wrap_method_handler

PUBLIC_CALLS_EXHAUSTED = "PUBLIC_CALLS_EXHAUSTED"
CALLER_CALLS_EXHAUSTED = "CALLER_CALLS_EXHAUSTED"


def peer_address(peer: str) -> str:
    """The client's address without its port: `ipv4:10.0.0.7:51234` → `ipv4:10.0.0.7`,
    `ipv6:[::1]:51234` → `ipv6:[::1]`; other forms (`unix:...`) whole."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


class _CountedCalls(Layer, abc.ABC):
    """Counts the calls it applies to while they are in flight, per key and (unless `limit` is None) in all;
    refuses one past either bound. Subclasses say which calls count, what their key is, and how a refusal
    reads."""

    def __init__(self, *, limit: int | None, per_key: int) -> None:
        if (limit is not None and limit < 1) or per_key < 1:
            raise ValueError(f"call limits must be at least 1, not {limit} and {per_key}")
        self._limit = limit
        self._per_key = per_key
        self._lock = threading.Lock()
        self._in_flight = 0
        self._by_key: dict[str, int] = {}  # only keys with calls in flight

    @abc.abstractmethod
    def counts(self, method: str) -> bool:
        """Whether calls to `method` are counted."""

    @abc.abstractmethod
    def key(self, context: grpc.ServicerContext) -> str:
        """Whose call this is."""

    @abc.abstractmethod
    def refusal(self, *, key_over: bool) -> ResourceExhausted:
        """The error for a call past the bound: its key's (`key_over`) or the one over all keys."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not self.counts(method):
            return handler
        enter = self._enter_until_the_call_ends

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    enter(context)
                    yield from behavior(request, context)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                enter(context)
                return behavior(request, context)

            return unary

        return wrap_method_handler(handler, wrap)

    def _enter_until_the_call_ends(self, context: grpc.ServicerContext) -> None:
        """Counts the call, or refuses it, until it ends: when its answer has been delivered (or it was cancelled),
        not when the handler returns. A client that never reads its answers leaves them in the server's memory
        (a ListTasks page is up to 3 MiB), and those calls must go on counting against it."""
        key = self._enter(context)
        when_the_call_ends(context, functools.partial(self._leave, key))

    def _enter(self, context: grpc.ServicerContext) -> str:
        key = self.key(context)
        with self._lock:
            from_key = self._by_key.get(key, 0)
            over_all = self._limit is not None and self._in_flight >= self._limit
            if over_all or from_key >= self._per_key:
                raise self.refusal(key_over=from_key >= self._per_key)
            self._in_flight += 1
            self._by_key[key] = from_key + 1
        return key

    def _leave(self, key: str) -> None:
        with self._lock:
            self._in_flight -= 1
            left = self._by_key[key] - 1
            if left:
                self._by_key[key] = left
            else:
                del self._by_key[key]


class PublicCallsLimit(_CountedCalls):
    """At most `limit` calls to `public_services` (no token needed) in flight, `per_peer` from one address."""

    def __init__(self, public_services: frozenset[str], *, limit: int, per_peer: int) -> None:
        super().__init__(limit=limit, per_key=per_peer)
        self._public_services = public_services

    def counts(self, method: str) -> bool:
        return service_of(method) in self._public_services

    def key(self, context: grpc.ServicerContext) -> str:
        return peer_address(context.peer())

    def refusal(self, *, key_over: bool) -> ResourceExhausted:
        return ResourceExhausted(
            "too many health and reflection calls in flight"
            + (" from your address" if key_over else "")
            + ": end some (a health Watch holds its place while it is open) and try again",
            reason=PUBLIC_CALLS_EXHAUSTED,
        )


class CallerCallsLimit(_CountedCalls):
    """At most `limit` calls in flight from one signed-in user (the token's `sub`). Put it after the
    AuthInterceptor, which sets the caller; calls to `public_services` are not counted."""

    def __init__(self, public_services: frozenset[str], *, limit: int) -> None:
        super().__init__(limit=None, per_key=limit)  # over all callers, grpcio's max_concurrent_rpcs applies
        self._public_services = public_services

    def counts(self, method: str) -> bool:
        return service_of(method) not in self._public_services

    def key(self, context: grpc.ServicerContext) -> str:
        return current_user_id()

    def refusal(self, *, key_over: bool) -> ResourceExhausted:
        return ResourceExhausted(
            "you have too many calls in flight: wait for some to finish, then try again",
            reason=CALLER_CALLS_EXHAUSTED,
        )
