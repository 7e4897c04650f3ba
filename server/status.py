"""The one place where exceptions become gRPC statuses with google.rpc details."""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.call_pipeline import Layer
from server.errors import (
    Aborted,
    AlreadyExists,
    CommitOutcomeUnknown,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TodoError,
    Unauthenticated,
    Unavailable,
)
from server.rpc_handlers import Behavior, wrap_method_handler

ERROR_DOMAIN = "todo.v1"

_log = logging.getLogger("todo.errors")

_CODES: dict[type[TodoError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    NotFound: code_pb2.NOT_FOUND,
    Aborted: code_pb2.ABORTED,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    Unavailable: code_pb2.UNAVAILABLE,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    CommitOutcomeUnknown: code_pb2.UNKNOWN,  # not retried by gRPC's policies: the caller reads back first
    DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
}


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: TodoError) -> grpc.Status:
    """The status a caller sees for `error`: code, its safe message and machine-readable details."""
    code = next((c for cls, c in _CODES.items() if isinstance(error, cls)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=error.message)
    if isinstance(error, InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        status.details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    # On every error (AIP-193): a client can switch on the reason without parsing the message.
    status.details.append(_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)))
    if isinstance(error, Unavailable):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
        status.details.append(_packed(retry))
    return rpc_status.to_status(status)


def _abort_internal(context: grpc.ServicerContext, method: str, error: BaseException) -> None:
    # The log gets where it broke, not the exception text: that may hold SQL, data or a token.
    error_id = secrets.token_hex(6)
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno}" if frame else "?"
    _log.error("internal error id=%s method=%s type=%s at=%s", error_id, method, type(error).__name__, where)
    message = f"internal error (id {error_id}); the operators can look it up"
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL_ERROR", domain=ERROR_DOMAIN, metadata={"error_id": error_id}
    )
    status = status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[_packed(info)])
    context.abort_with_status(rpc_status.to_status(status))


def _ignore(_error: TodoError) -> None:
    return None


def _already_ended(context: grpc.ServicerContext, error: Exception) -> bool:
    """Whether the call has its status already: aborted by us, or cancelled by its client (grpcio then
    raises RpcError from the request iterator; there is nobody left to answer)."""
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return True
    return isinstance(error, grpc.RpcError) and not context.is_active()


class ErrorStatusInterceptor(Layer):
    """Turns TodoErrors into their statuses and any other exception into a bare INTERNAL.

    `on_error`, if given, sees each TodoError first (the metrics count auth failures by reason there).
    """

    def __init__(self, *, on_error: Callable[[TodoError], None] | None = None) -> None:
        self._on_error = on_error or _ignore

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        on_error = self._on_error

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    try:
                        yield from behavior(request, context)
                    except TodoError as error:
                        on_error(error)
                        context.abort_with_status(to_status(error))
                    except Exception as error:
                        if _already_ended(context, error):
                            raise
                        _abort_internal(context, method, error)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except TodoError as error:
                    on_error(error)
                    context.abort_with_status(to_status(error))
                except Exception as error:
                    if _already_ended(context, error):
                        raise
                    _abort_internal(context, method, error)
                return None  # unreachable: abort raises

            return unary

        return wrap_method_handler(handler, wrap)
