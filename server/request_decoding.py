"""Requests that do not decode (say, invalid UTF-8 in a string field) become INVALID_ARGUMENT, not INTERNAL.

grpcio aborts a call whose request deserializer raises with INTERNAL ("Exception deserializing request!"),
before any interceptor's behaviour runs. So the deserializer here never raises: it hands the behaviour an
`UndecodableRequest` instead, and the behaviour raises `InvalidArgument`, which `ErrorStatusInterceptor`
maps like any other domain error. As the innermost interceptor, this runs after the token is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.call_pipeline import Layer
from server.errors import InvalidArgument
from server.rpc_handlers import Behavior, wrap_method_handler

_DESCRIPTION = "the request is not a valid protobuf message of this method's type (is every string UTF-8?)"


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request message whose bytes did not decode."""

    size: int


def _lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return UndecodableRequest(size=len(data))

    return decode


def _checked(request: Any) -> Any:
    if isinstance(request, UndecodableRequest):
        raise InvalidArgument.field("request", _DESCRIPTION)
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request)


class RequestDecodingInterceptor(Layer):
    """Innermost interceptor: undecodable request bytes reach the caller as INVALID_ARGUMENT."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        request_streaming = handler.request_streaming

        def wrap(behavior: Behavior, _response_streaming: bool) -> Behavior:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                checked = _checked_stream(request) if request_streaming else _checked(request)
                return behavior(checked, context)

            return call

        return wrap_method_handler(handler, wrap, request_deserializer=_lenient(handler.request_deserializer))
