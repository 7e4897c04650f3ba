"""Calls that need no token (health, reflection) get a bounded share of the server, so that clients without
a token cannot fill it.

Every call in flight takes one of `max_concurrent_rpcs`; past it grpcio refuses every call, whoever makes
it. A health Watch stream, or a public call that never sends its message, holds its place until its
deadline or its connection's max age (31 min): 1000 of them, from one client without a token, locked
every signed-in user out. Here public calls in flight are counted, in all and per client address, and one
past either bound is refused RESOURCE_EXHAUSTED at once (limits.py says how the bounds were chosen).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from server.call_pipeline import Layer
from server.errors import ResourceExhausted
from server.rpc_handlers import Behavior, service_of, wrap_method_handler

PUBLIC_CALLS_EXHAUSTED = "PUBLIC_CALLS_EXHAUSTED"


def peer_address(peer: str) -> str:
    """The client's address without its port: `ipv4:10.0.0.7:51234` → `ipv4:10.0.0.7`,
    `ipv6:[::1]:51234` → `ipv6:[::1]`; other forms (`unix:...`) whole."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


class PublicCallsLimit(Layer):
    """At most `limit` calls to `public_services` in flight, at most `per_peer` of them from one address.

    Put it before the request (CallPipeline's `before_request`), so that a call that never sends its
    message is counted, and inside ErrorStatusInterceptor, which turns the refusal into its status.
    """

    def __init__(self, public_services: frozenset[str], *, limit: int, per_peer: int) -> None:
        if limit < 1 or per_peer < 1:
            raise ValueError(f"public call limits must be at least 1, not {limit} and {per_peer}")
        self._public_services = public_services
        self._limit = limit
        self._per_peer = per_peer
        self._lock = threading.Lock()
        self._in_flight = 0
        self._by_address: dict[str, int] = {}  # only addresses with calls in flight: bounded by `limit`

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if service_of(method) not in self._public_services:
            return handler
        enter, leave = self._enter, self._leave

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    address = enter(context)
                    try:
                        yield from behavior(request, context)
                    finally:
                        leave(address)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                address = enter(context)
                try:
                    return behavior(request, context)
                finally:
                    leave(address)

            return unary

        return wrap_method_handler(handler, wrap)

    def _enter(self, context: grpc.ServicerContext) -> str:
        address = peer_address(context.peer())
        with self._lock:
            from_address = self._by_address.get(address, 0)
            if self._in_flight >= self._limit or from_address >= self._per_peer:
                raise ResourceExhausted(
                    "too many health and reflection calls in flight"
                    + (" from your address" if from_address >= self._per_peer else "")
                    + ": end some (a health Watch holds its place while it is open) and try again",
                    reason=PUBLIC_CALLS_EXHAUSTED,
                )
            self._in_flight += 1
            self._by_address[address] = from_address + 1
        return address

    def _leave(self, address: str) -> None:
        with self._lock:
            self._in_flight -= 1
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]
