"""Serving a unary call before its request message is in, so that our layers can refuse it at once.

grpcio's sync server waits for a unary call's request message, on the executor's thread, before it runs
the call's handler; a request-streaming handler it runs at once, with an iterator of the messages. A client
that sent HEADERS and never the message held its call, and one of `max_concurrent_rpcs`, until its deadline
or its connection's max age (31 min), whether or not it had a token: 1000 such calls, without a token,
locked every signed-in user out. So a unary-request method is served as a request-streaming one: the layers
before the request (auth among them) run at dispatch, with a PendingRequest, and `receiving_request` reads
the one message before the layers after it and the method itself, which see a unary call as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from server.errors import InvalidArgument
from server.rpc_handlers import Behavior, wrap_method_handler


class PendingRequest:
    """A unary call's request message, not yet received; `receive()` waits for it."""

    __slots__ = ("_messages",)

    def __init__(self, messages: Iterator[Any]) -> None:
        self._messages = messages

    def receive(self) -> Any:
        """The message; raises RpcError if the client cancelled the call meanwhile."""
        try:
            return next(self._messages)
        except StopIteration:
            # The client ended its side without a message (grpcio alone would say UNIMPLEMENTED).
            raise InvalidArgument.field("request", "this method takes one request message; none came") from None


def receiving_request(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler`, for a unary request, taking a PendingRequest and receiving it before its behaviour runs."""
    if handler.request_streaming:
        return handler

    def wrap(behavior: Behavior, _response_streaming: bool) -> Behavior:
        def call(request: PendingRequest, context: grpc.ServicerContext) -> Any:
            return behavior(request.receive(), context)

        return call

    return wrap_method_handler(handler, wrap)


def served_before_request(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` (a unary request's, taking a PendingRequest) as the request-streaming handler grpcio runs at
    dispatch. Any other handler is returned as it is."""
    if handler.request_streaming:
        return handler
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        unary = handler.unary_unary
        return grpc.stream_unary_rpc_method_handler(
            lambda messages, context: unary(PendingRequest(messages), context), deserialize, serialize
        )
    streaming = handler.unary_stream
    return grpc.stream_stream_rpc_method_handler(
        lambda messages, context: streaming(PendingRequest(messages), context), deserialize, serialize
    )
