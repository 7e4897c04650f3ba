"""Clients without a token must not be able to fill the server and lock signed-in users out.

Every call in flight takes one of `max_concurrent_rpcs`; past it, grpcio refuses every call at once. A
call that waits for a request message that never comes, or a health Watch stream, holds its place until
its deadline or its connection's max age (31 min). These tests make the calls an attacker would.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import run_server
from server.config import Settings
from server.limits import PUBLIC_CALLS_PER_PEER, caller_calls_limit
from tests.stalled_calls import CALLS_PER_CONNECTION, own_connection, stalled_calls
from tests.support import User, failure_of
from tests.unread_answers import unread_answers


@pytest.mark.parametrize(
    "metadata",
    [None, (("authorization", "Bearer not-a-jwt"),), (("authorization", "Basic YWxpY2U6c2VjcmV0"),)],
    ids=["no token", "a bad token", "not a bearer token"],
)
def test_a_call_without_a_valid_token_is_refused_before_its_request_message(
    settings: Settings, alice: User, metadata: Any
) -> None:
    limited = dataclasses.replace(settings, max_concurrent_rpcs=40)
    with run_server(limited) as server:
        target = f"127.0.0.1:{server.port}"
        # Twice the server's limit: before, they all waited for their messages, and alice was refused.
        with stalled_calls(server.port, 2 * limited.max_concurrent_rpcs, metadata) as calls:
            codes = {call.exception(timeout=5).code() for call in calls}  # type: ignore[union-attr]
            assert codes == {grpc.StatusCode.UNAUTHENTICATED}
            with grpc.insecure_channel(target) as channel:
                _on(channel, alice).list_tasks()


def test_public_calls_from_one_client_leave_room_for_everyone_else(settings: Settings, alice: User) -> None:
    limited = dataclasses.replace(settings, listen="[::]:0", max_concurrent_rpcs=1000)
    with run_server(limited) as server:
        # As many health Watch streams as the server runs calls: before, every later call was refused.
        count = limited.max_concurrent_rpcs
        attackers = [own_connection(server.port) for _ in range(count // CALLS_PER_CONNECTION)]
        watchers = [health_pb2_grpc.HealthStub(channel).Watch for channel in attackers]
        watches = [watchers[n % len(watchers)](health_pb2.HealthCheckRequest(), timeout=10) for n in range(count)]
        try:
            refused = _refused(watches, wait_for=count - PUBLIC_CALLS_PER_PEER)
            assert {code for code, _ in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}, set(refused)
            assert "health and reflection" in refused[0][1]
            # A signed-in user is served, and so is a health probe from another address (the kubelet's).
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                _on(channel, alice).list_tasks()
            if _ipv6_loopback_works():
                with grpc.insecure_channel(f"[::1]:{server.port}") as probe:
                    check = health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert check.status == health_pb2.HealthCheckResponse.SERVING
            # The attacker's own further public calls are refused, and say why.
            failure = failure_of(
                lambda: health_pb2_grpc.HealthStub(attackers[0]).Check(health_pb2.HealthCheckRequest(), timeout=5)
            )
            assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert failure.reason == "PUBLIC_CALLS_EXHAUSTED"
        finally:
            for call in watches:
                call.cancel()
            for channel in attackers:
                channel.close()


def test_public_calls_are_served_again_once_the_held_ones_end(settings: Settings) -> None:
    with run_server(settings) as server, own_connection(server.port) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(PUBLIC_CALLS_PER_PEER)]
        for call in watches:
            assert next(call).status == health_pb2.HealthCheckResponse.SERVING
        assert failure_of(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)).code == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        for call in watches:
            call.cancel()
        deadline = time.monotonic() + 5  # the server sees the cancellations a moment later
        check = functools.partial(health.Check, health_pb2.HealthCheckRequest(), timeout=5)
        while (code := _failure_code(check)) is not None:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "public calls stayed refused after the held ones ended"
            time.sleep(0.05)


def _on(channel: grpc.Channel, user: User) -> User:
    """`user`, calling over `channel` (a server other than the module's)."""
    return User(user.user_id, user.token, pb_grpc.TaskServiceStub(channel))


def _failure_code(call: Any) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return None


def _refused(calls: list[Any], *, wait_for: int) -> list[tuple[grpc.StatusCode, str]]:
    """The (code, details) of the calls that ended, once at least `wait_for` have (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        ended = [call for call in calls if call.done()]
        if len(ended) >= wait_for or time.monotonic() > deadline:
            return [(call.code(), call.details() or "") for call in ended]
        time.sleep(0.05)


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_one_signed_in_user_cannot_hold_every_call_in_flight(settings: Settings, alice: User, bob: User) -> None:
    # A browser user can read their own JWT (Better Auth's /api/auth/token): with the gRPC port within
    # reach, calls that never send their message held every place, and everyone else was refused.
    limited = dataclasses.replace(settings, max_concurrent_rpcs=40)
    with (
        run_server(limited) as server,
        stalled_calls(server.port, limited.max_concurrent_rpcs, alice.metadata) as stalled,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        refused = [call for call in stalled if call.done()]
        assert refused, "every one of alice's stalled calls was held"
        failure = failure_of(refused[0].result)
        assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_CALLS_EXHAUSTED")
        assert len(stalled) - len(refused) == caller_calls_limit(limited.max_concurrent_rpcs)
        _on(channel, bob).list_tasks()  # served
        assert failure_of(lambda: _on(channel, alice).list_tasks()).code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_calls_whose_answers_are_never_read_stay_in_flight_for_their_user(
    settings: Settings, alice: User, bob: User
) -> None:
    # A call stays in flight until its answer is delivered: a client that grants no flow-control window makes
    # the server hold every response (a ListTasks page: up to 3 MiB). Counting a call only while its handler
    # ran let one user pile them up: measured, one user's unread ListTasks pages held 1.3 GB of the server.
    limited = dataclasses.replace(settings, max_concurrent_rpcs=40)
    per_user = caller_calls_limit(limited.max_concurrent_rpcs)
    with run_server(limited) as server, unread_answers(server.port) as connection:
        list_mine = functools.partial(
            connection.call, "/todo.v1.TaskService/ListTasks", pb.ListTasksRequest(parent="users/me"), alice.token
        )
        outcomes = [list_mine() for _ in range(per_user + 3)]
        assert outcomes == ["answered"] * per_user + [str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])] * 3
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert _on(channel, bob).list_tasks().total_size == 0  # everyone else is served
