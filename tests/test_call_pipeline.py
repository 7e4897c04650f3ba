"""The call pipeline builds each method's handler once, yet every call still reads its own metadata."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from server.auth.interceptor import AuthInterceptor
from server.auth.tokens import TokenVerifier
from server.call_pipeline import CallPipeline, Layer
from server.identity import current_user_id
from server.rpc_handlers import Behavior, wrap_method_handler
from server.status import ErrorStatusInterceptor
from tests.support import failure_of, mint_token


class CountingLayer(Layer):
    """Counts how often it is asked to wrap a handler, and tags each response with the layer's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.wrapped: list[str] = []

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.wrapped.append(method)

        def wrap(behavior: Behavior, _streaming: bool) -> Behavior:
            def call(request: bytes, context: grpc.ServicerContext) -> bytes:
                return behavior(request, context) + f" <{self.name}".encode()

            return call

        return wrap_method_handler(handler, wrap)


def _whoami(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    return current_user_id().encode()


@pytest.fixture
def served(secret: bytes) -> Iterator[tuple[str, CountingLayer, CountingLayer]]:
    outer, inner = CountingLayer("outer"), CountingLayer("inner")
    auth = AuthInterceptor(TokenVerifier(hs256_secret=secret), public_services=frozenset())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[
            CallPipeline(
                before_request=[outer, ErrorStatusInterceptor(), auth],
                after_request=[inner],
            )
        ],
    )
    handlers = {name: grpc.unary_unary_rpc_method_handler(_whoami) for name in ("A", "B")}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Who", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", outer, inner
    server.stop(None)


def test_each_method_is_wrapped_once_and_layers_run_outermost_first(
    served: tuple[str, CountingLayer, CountingLayer], secret: bytes
) -> None:
    address, outer, inner = served
    users = ["alice", "bob", "carol"]
    with grpc.insecure_channel(address) as channel:
        for round_number in range(20):
            for method in ("A", "B"):
                user = users[round_number % len(users)]
                answer = channel.unary_unary(f"/probe.Who/{method}")(
                    b"", metadata=(("authorization", f"Bearer {mint_token(secret, user)}"),)
                )
                # Each call read its own token, though the handler was built for an earlier call.
                assert answer == f"{user} <inner <outer".encode()
    assert sorted(outer.wrapped) == sorted(inner.wrapped) == ["/probe.Who/A", "/probe.Who/B"]


def test_a_cached_handler_still_refuses_a_call_without_a_token(
    served: tuple[str, CountingLayer, CountingLayer], secret: bytes
) -> None:
    address, _, _ = served
    with grpc.insecure_channel(address) as channel:
        whoami = channel.unary_unary("/probe.Who/A")
        assert whoami(b"", metadata=(("authorization", f"Bearer {mint_token(secret, 'dave')}"),)) == (
            b"dave <inner <outer"
        )
        assert failure_of(lambda: whoami(b"")).code == grpc.StatusCode.UNAUTHENTICATED


def test_an_unknown_method_is_unimplemented_and_not_remembered(
    served: tuple[str, CountingLayer, CountingLayer],
) -> None:
    address, outer, _ = served
    with grpc.insecure_channel(address) as channel:
        for n in range(5):
            assert failure_of(lambda n=n: channel.unary_unary(f"/probe.Who/Nope{n}")(b"")).code == (
                grpc.StatusCode.UNIMPLEMENTED
            )
    assert outer.wrapped == []


def test_a_unary_call_that_ends_without_its_message_is_invalid_argument(
    served: tuple[str, CountingLayer, CountingLayer], secret: bytes
) -> None:
    address, _, _ = served
    token = (("authorization", f"Bearer {mint_token(secret, 'erin')}"),)
    with grpc.insecure_channel(address) as channel:
        # A client that closes its side with no message at all (grpcio's stubs never do; a raw client may).
        no_message = channel.stream_unary("/probe.Who/A")
        failure = failure_of(lambda: no_message(iter(()), metadata=token, timeout=5))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "one request message" in failure.message
