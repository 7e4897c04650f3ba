"""The auth interceptor: the only code that reads `authorization` metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from server.auth.tokens import TOKEN_MALFORMED, TOKEN_MISSING, TokenVerifier
from server.call_pipeline import Layer
from server.errors import Unauthenticated
from server.identity import set_identity
from server.rpc_handlers import Behavior, service_of, wrap_method_handler

_AUTH_HEADER_KEY = "authorization"
_BEARER_PREFIX = "bearer "


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The token of the single `authorization: Bearer <token>` entry; raises Unauthenticated otherwise."""
    values = [value for key, value in metadata or () if key == _AUTH_HEADER_KEY]
    if not values:
        raise Unauthenticated("missing authorization metadata: send 'Bearer <jwt>'", reason=TOKEN_MISSING)
    if len(values) > 1:
        raise Unauthenticated("send exactly one authorization entry", reason=TOKEN_MALFORMED)
    value = values[0]
    if isinstance(value, str) and value.strip().lower() == _BEARER_PREFIX.strip():
        raise Unauthenticated("authorization has no token after 'Bearer'", reason=TOKEN_MISSING)
    # The scheme is case-insensitive (RFC 9110); the token itself is not.
    if not isinstance(value, str) or value[: len(_BEARER_PREFIX)].lower() != _BEARER_PREFIX:
        raise Unauthenticated("authorization must be 'Bearer <jwt>'", reason=TOKEN_MALFORMED)
    token = value[len(_BEARER_PREFIX) :].strip()
    if not token:
        raise Unauthenticated("authorization has no token after 'Bearer'", reason=TOKEN_MISSING)
    return token


class AuthInterceptor(Layer):
    """Verifies the caller's token for every method not in a public service, and sets the identity.

    Default deny: a method is public only if its service is listed in `public_services`. The token is
    checked inside the call, on the pool thread, never on grpcio's serving thread.
    """

    def __init__(self, verifier: TokenVerifier, *, public_services: frozenset[str]) -> None:
        self._verifier = verifier
        self._public_services = public_services

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if service_of(method) in self._public_services:
            return handler
        verify = self._verifier.verify

        def authenticated(behavior: Behavior, _response_streaming: bool) -> Behavior:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                set_identity(verify(bearer_token(context.invocation_metadata())))
                return behavior(request, context)

            return call

        return wrap_method_handler(handler, authenticated)
