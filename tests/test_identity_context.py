"""The caller's identity stays with its own call: never leaks to another call, thread or user."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from server.auth.interceptor import AuthInterceptor
from server.auth.tokens import TokenVerifier
from server.identity import NoIdentityError, current_identity, current_user_id, peek_identity
from server.status import ErrorStatusInterceptor
from tests.support import failure_of, mint_token

_PROTECTED = "/probe.Protected/WhoAmI"
_PUBLIC = "/probe.Public/WhoAmI"


def _who_am_i(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    before = current_user_id()
    time.sleep(0.001)  # let the other pool thread run another user's call in between
    after = current_user_id()
    return before.encode() if before == after else f"{before} became {after}".encode()


def _peek(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    identity = peek_identity()
    return b"<none>" if identity is None else identity.user_id.encode()


@pytest.fixture(scope="module")
def probe_address(secret: bytes) -> Iterator[str]:
    """The real interceptors on a two-thread pool, in front of handlers that report the identity."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[
            ErrorStatusInterceptor(),
            AuthInterceptor(TokenVerifier(hs256_secret=secret), public_services=frozenset({"probe.Public"})),
        ],
    )
    for service, behavior in (("probe.Protected", _who_am_i), ("probe.Public", _peek)):
        handler = grpc.unary_unary_rpc_method_handler(behavior)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"WhoAmI": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_many_concurrent_users_each_see_only_themselves(probe_address: str, secret: bytes) -> None:
    users = [f"user{i}-{secrets.token_hex(4)}" for i in range(32)]
    tokens = {user: mint_token(secret, user) for user in users}
    with grpc.insecure_channel(probe_address) as channel:
        who_am_i = channel.unary_unary(_PROTECTED)

        def ask(user: str) -> tuple[str, bytes]:
            return user, who_am_i(b"", metadata=[("authorization", f"Bearer {tokens[user]}")], timeout=30)

        with futures.ThreadPoolExecutor(max_workers=16) as clients:
            answers = list(clients.map(ask, users * 20))
    assert len(answers) == 640
    assert all(answer == user.encode() for user, answer in answers)


def test_public_call_after_protected_calls_sees_no_identity(probe_address: str, secret: bytes) -> None:
    token = mint_token(secret, "alice")
    with grpc.insecure_channel(probe_address) as channel:
        protected, public = channel.unary_unary(_PROTECTED), channel.unary_unary(_PUBLIC)
        for _ in range(50):  # two pool threads: every public call follows a protected one on the same thread
            assert protected(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10) == b"alice"
            assert public(b"", timeout=10) == b"<none>"


def test_a_failed_authentication_leaves_no_identity_behind(probe_address: str, secret: bytes) -> None:
    with grpc.insecure_channel(probe_address) as channel:
        protected, public = channel.unary_unary(_PROTECTED), channel.unary_unary(_PUBLIC)
        protected(b"", metadata=[("authorization", f"Bearer {mint_token(secret, 'alice')}")], timeout=10)
        failure = failure_of(lambda: protected(b"", metadata=[("authorization", "Bearer x.y.z")], timeout=10))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
        assert public(b"", timeout=10) == b"<none>"


def test_code_that_needs_a_caller_fails_closed_without_one() -> None:
    with pytest.raises(NoIdentityError):
        current_identity()
    with pytest.raises(NoIdentityError):
        current_user_id()


def test_a_handler_needing_identity_in_a_public_service_fails_with_internal(secret: bytes) -> None:
    """If someone wired a data-layer call into a public method, it must fail, not run unscoped."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[
            ErrorStatusInterceptor(),
            AuthInterceptor(TokenVerifier(hs256_secret=secret), public_services=frozenset({"probe.Public"})),
        ],
    )
    handler = grpc.unary_unary_rpc_method_handler(_who_am_i)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Public", {"WhoAmI": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            failure = failure_of(lambda: channel.unary_unary(_PUBLIC)(b"", timeout=10))
        assert failure.code == grpc.StatusCode.INTERNAL
        assert failure.reason == "INTERNAL_ERROR"  # ErrorInfo here too; its error_id is the one in the message
        assert "NoIdentityError" not in failure.message
        assert "Traceback" not in failure.message
    finally:
        server.stop(None)
