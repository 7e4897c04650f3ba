"""Who gets in: tokens, metadata and the public/protected split (issue 2)."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2 as pb

from server.app import build_server
from server.config import Settings
from tests.support import User, failure_of, mint_token

LIST_ME = pb.ListTasksRequest(parent="users/me")


def list_with(grpc_stub, metadata):  # type: ignore[no-untyped-def]
    return lambda: grpc_stub.ListTasks(LIST_ME, metadata=metadata, timeout=10)


def test_no_token_is_unauthenticated(grpc_stub) -> None:  # type: ignore[no-untyped-def]
    failure = failure_of(lambda: grpc_stub.ListTasks(LIST_ME, timeout=10))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == "TOKEN_MISSING"


def test_token_signed_with_another_secret_is_unauthenticated(grpc_stub) -> None:  # type: ignore[no-untyped-def]
    forged = mint_token(b"x" * 48, "alice")
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {forged}")]))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == "TOKEN_INVALID"
    assert forged not in failure.message


def test_valid_token_is_accepted(alice: User) -> None:
    assert alice.list_tasks().total_size == 0


def test_scheme_is_case_insensitive(grpc_stub, secret: bytes) -> None:  # type: ignore[no-untyped-def]
    token = mint_token(secret, "carol")
    response = grpc_stub.ListTasks(LIST_ME, metadata=[("authorization", f"bearer {token}")], timeout=10)
    assert response.total_size == 0


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"ttl": -120}, "TOKEN_EXPIRED", id="expired"),
        pytest.param({"nbf": int(time.time()) + 3600}, "TOKEN_INVALID", id="not-yet-valid"),
        pytest.param({"sub": None}, "TOKEN_INVALID", id="no-sub"),
        pytest.param({"sub": ""}, "TOKEN_INVALID", id="empty-sub"),
        pytest.param({"sub": 42}, "TOKEN_INVALID", id="non-string-sub"),
        pytest.param({"sub": "alice/tasks/x"}, "TOKEN_INVALID", id="sub-with-slash"),
        pytest.param({"sub": "alice\nbob"}, "TOKEN_INVALID", id="sub-with-newline"),
        # Shown raw in log lines and resource names, these would make "alice" and another id look alike
        # (a right-to-left override, a zero-width space) or drive a terminal (C1 CSI).
        pytest.param({"sub": "alice\u202ecilA"}, "TOKEN_INVALID", id="sub-with-bidi-override"),
        pytest.param({"sub": "ali\u200bce"}, "TOKEN_INVALID", id="sub-with-zero-width-space"),
        pytest.param({"sub": "alice\x9b31m"}, "TOKEN_INVALID", id="sub-with-c1-control"),
        pytest.param({"sub": "alice\ue000"}, "TOKEN_INVALID", id="sub-with-private-use"),
        pytest.param({"sub": "a" * 129}, "TOKEN_INVALID", id="sub-too-long"),
    ],
)
def test_bad_claims_are_unauthenticated(grpc_stub, secret: bytes, claims: dict, reason: str) -> None:  # type: ignore[no-untyped-def]
    token = mint_token(secret, **{"sub": "alice", **claims})
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


def test_token_without_exp_is_refused(grpc_stub, secret: bytes) -> None:  # type: ignore[no-untyped-def]
    token = jwt.encode({"sub": "alice"}, secret, algorithm="HS256")
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_claim_that_is_not_a_number_is_refused(grpc_stub, secret: bytes, claim: str) -> None:  # type: ignore[no-untyped-def]
    # RFC 7519 makes them JSON numbers. PyJWT reads "1796300000" as one, and a string expiry once reached the
    # verified-token cache, where comparing it with the clock made the call INTERNAL.
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 600, "nbf": now - 60, "iat": now - 60}
    claims[claim] = str(claims[claim])
    token = jwt.encode(claims, secret, algorithm="HS256")
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert claim in failure.message


@pytest.mark.parametrize(
    "exp",
    [
        pytest.param(10**310, id="too-big-for-a-float"),
        pytest.param(1e300, id="1e300"),
        pytest.param(2**64, id="2**64"),
    ],
)
def test_an_expiry_past_the_year_9999_is_refused(grpc_stub, secret: bytes, exp: float) -> None:  # type: ignore[no-untyped-def]
    # Signed, but past any date: 10**310 made the verified-token cache's float() raise (INTERNAL), and
    # 1e300 was cached as a token that never expires.
    token = jwt.encode({"sub": "alice", "exp": exp}, secret, algorithm="HS256")
    for _ in range(2):  # the second time, from the cache if it had been let in
        failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
        assert "exp" in failure.message


@pytest.mark.parametrize("aud", [[], "", [""]], ids=["empty-list", "empty-string", "list-of-empty"])
def test_an_aud_claim_is_refused_when_no_audience_is_configured_even_an_empty_one(  # type: ignore[no-untyped-def]
    grpc_stub, secret: bytes, aud: object
) -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600, "aud": aud}, secret, algorithm="HS256")
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


def test_alg_none_is_refused(grpc_stub) -> None:  # type: ignore[no-untyped-def]
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    failure = failure_of(list_with(grpc_stub, [("authorization", f"Bearer {token}")]))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("Basic YWxpY2U6cHc=", "TOKEN_MALFORMED", id="basic-scheme"),
        pytest.param("{token}", "TOKEN_MALFORMED", id="no-scheme"),
        pytest.param("Bearer", "TOKEN_MISSING", id="bearer-only"),
        pytest.param("Bearer ", "TOKEN_MISSING", id="bearer-empty"),
        pytest.param("Bearer not-a-jwt", "TOKEN_MALFORMED", id="not-a-jwt"),
        pytest.param("Bearer a.b.c.d", "TOKEN_MALFORMED", id="four-segments"),
        pytest.param("Bearer {token}x", "TOKEN_INVALID", id="tampered-signature"),
        pytest.param("Bearer " + "a" * 9000 + ".b.c", "TOKEN_MALFORMED", id="oversized"),
    ],
)
def test_malformed_authorization_is_unauthenticated(grpc_stub, secret: bytes, value: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    header = value.replace("{token}", mint_token(secret, "alice"))
    failure = failure_of(list_with(grpc_stub, [("authorization", header)]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


def test_two_authorization_entries_are_refused(grpc_stub, secret: bytes) -> None:  # type: ignore[no-untyped-def]
    alice, bob = mint_token(secret, "alice"), mint_token(secret, "bob")
    metadata = [("authorization", f"Bearer {alice}"), ("authorization", f"Bearer {bob}")]
    failure = failure_of(list_with(grpc_stub, metadata))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED")


def test_health_needs_no_token(grpc_channel) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(grpc_channel)
    for service in ("", "todo.v1.TaskService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_a_method_added_later_requires_a_token(settings: Settings, secret: bytes) -> None:
    """Default deny: a service nobody listed as public is protected without anyone remembering to."""
    todo_server = build_server(settings)
    echo = grpc.unary_unary_rpc_method_handler(lambda request, _context: request)
    todo_server.grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("todo.v1.NewService", {"Echo": echo}),)
    )
    todo_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
            call = channel.unary_unary("/todo.v1.NewService/Echo")
            failure = failure_of(lambda: call(b"hi", timeout=10))
            assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
            token = mint_token(secret, "alice")
            assert call(b"hi", metadata=[("authorization", f"Bearer {token}")], timeout=10) == b"hi"
    finally:
        todo_server.stop(grace=None)
